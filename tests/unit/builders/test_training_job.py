"""The training gang: multi-node wiring, failure policy, resources, queue modes."""

from __future__ import annotations

import pytest

from finetune_api.queue import Flavor
from finetune_operator.builders import build_training_job, build_training_service, training_failure_kind
from finetune_operator.settings import OperatorSettings

from .conftest import make_job

pytestmark = pytest.mark.unit

MULTINODE = {
    "adapter": {"type": "full"},
    "resources": {
        "nodes": 4,
        "gpusPerNode": 8,
        "sharedMemory": "64Gi",
        "deepspeed": {"zeroStage": 3},
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "serving": {"mode": "merged"},
}


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_indexed_job_wires_torchrun_through_pet_env() -> None:
    job = make_job("big", **MULTINODE)
    obj = build_training_job(job, OperatorSettings(), attempt=2)
    spec = obj["spec"]
    assert obj["metadata"]["name"] == "big-train-a2"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == ("Indexed", 4, 4, 0)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == build_training_service(job, OperatorSettings())["metadata"]["name"] == "big-train"
    container = pod["containers"][0]
    env = _env(container)
    assert env["PET_NNODES"] == "4" and env["PET_NPROC_PER_NODE"] == "8"
    assert env["PET_MASTER_ADDR"] == "big-train-a2-0.big-train" and env["PET_MASTER_PORT"] == "29500"
    assert env["PET_NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["HF_HUB_OFFLINE"] == "1" and env["TORCH_EXTENSIONS_DIR"].startswith("/tmp")
    assert container["command"] == ["python", "-m", "finetune_trainer.train.launcher"]
    # the same launch_argv as `ftctl run`: explicit flags, the per-pod values as PET_* references
    assert container["args"] == [
        "torchrun", "--nnodes", "4", "--nproc_per_node", "8", "--node_rank", "$(PET_NODE_RANK)",
        "--master_addr", "$(PET_MASTER_ADDR)", "--master_port", "$(PET_MASTER_PORT)",
        "-m", "finetune_trainer", "train", "--config", "/etc/finetune/config.json",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert spec["suspend"] is False


def test_pod_failure_policy_classifies_user_errors_and_preemption() -> None:
    rules = build_training_job(make_job(), OperatorSettings(), attempt=0)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [1] and rules[0]["action"] == "FailJob"
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]

    def failed(reason: str, message: str) -> dict:
        return {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}

    assert training_failure_kind(failed("PodFailurePolicy", "Container trainer for pod ns/x-0 failed with exit code 1 matching FailJob rule at index 0")) == "user"
    assert training_failure_kind(failed("PodFailurePolicy", "Pod ns/x-1 has condition DisruptionTarget matching FailJob rule at index 1")) == "preempted"
    assert training_failure_kind(failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")) == "infrastructure"
    assert training_failure_kind({"conditions": [{"type": "Complete", "status": "True"}]}) is None


def test_accelerate_gets_machine_rank_and_total_processes() -> None:
    job = make_job(resources={"nodes": 2, "gpusPerNode": 4, "launcher": "accelerate"})
    container = build_training_job(job, OperatorSettings(), attempt=0)["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert container["command"] == ["python", "-m", "finetune_trainer.train.launcher"] and args[0] == "accelerate"
    flags = dict(zip(args[1::2], args[2::2]))
    assert flags["--machine_rank"] == "$(PET_NODE_RANK)" and flags["--main_process_ip"] == "$(PET_MASTER_ADDR)"
    assert flags["--num_machines"] == "2" and flags["--num_processes"] == "8" and "--multi_gpu" in args
    # without DeepSpeed the Trainer's precision flags decide, as in `ftctl run` (one launch_argv for both)
    assert args[args.index("--mixed_precision") + 1] == "no"


def test_embedded_admission_injects_the_flavor() -> None:
    flavor = Flavor.model_validate(
        {"name": "h100", "nodeLabels": {"pool": "h100"}, "tolerations": [{"key": "spot", "operator": "Exists"}],
         "resources": [{"name": "nvidia.com/gpu", "nominal": "16"}]}
    )
    pod = build_training_job(make_job("big", **MULTINODE), OperatorSettings(), 0, flavor)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100", "pool": "h100"}
    assert [t["key"] for t in pod["tolerations"]] == ["nvidia.com/gpu", "spot"]


def test_kueue_mode_labels_and_suspends() -> None:
    job = make_job(queue={"name": "team-q", "priorityClass": "high"})
    obj = build_training_job(job, OperatorSettings(queue_mode="kueue"), attempt=0)
    assert obj["spec"]["suspend"] is True
    assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"
    assert obj["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"


def test_cpu_training_requests_no_gpu_and_uses_cpu_deepspeed() -> None:
    job = make_job(resources={"gpusPerNode": 0, "processesPerNode": 2}, model={"uri": "hf://org/tiny", "name": "tiny"})
    container = build_training_job(job, OperatorSettings(cpu_runtime=True), 0)["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert env["DS_ACCELERATOR"] == "cpu" and env["OMP_NUM_THREADS"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1", "training reads the fetched copy of a hub model, never the hub"


def test_cpu_training_compiles_deepspeed_ops_once_per_namespace_and_image_on_the_artifacts_claim() -> None:
    settings = OperatorSettings(cpu_runtime=True)

    def ops_dir(name: str, namespace: str, **spec: object) -> str:
        job = make_job(name, resources={"gpusPerNode": 0}, **spec)
        job.metadata.namespace = namespace
        return _env(build_training_job(job, settings, 0)["spec"]["template"]["spec"]["containers"][0])["TORCH_EXTENSIONS_DIR"]

    first = ops_dir("a", "team-a")
    mounts = build_training_job(make_job("a", resources={"gpusPerNode": 0}), settings, 0)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    claim_mount = next(m for m in mounts if first.startswith(m["mountPath"] + "/"))
    assert not claim_mount.get("readOnly"), "the ops are compiled into the claim, so it is mounted writable"
    assert ops_dir("b", "team-a") == first, "two jobs in one namespace share the compiled ops"
    assert ops_dir("a", "team-b") != first, "another namespace never loads a shared object a tenant could plant"
    assert ops_dir("a", "team-a", trainerImage="registry.example/trainer:2") != first, "a new image compiles again"
    gpu = build_training_job(make_job("g", **MULTINODE), OperatorSettings(), 0)["spec"]["template"]["spec"]["containers"][0]
    assert _env(gpu)["TORCH_EXTENSIONS_DIR"].startswith("/tmp"), "GPU pods compile no op and keep their scratch"

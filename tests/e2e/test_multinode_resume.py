"""Multi-node training on real processes, and a rank that dies mid-training: `nodes: 2` on CPU
(`cpuMultiNode`), one process per pod. Each pod has a network namespace and an address of its own on the
local runner's pod bridge, so both listen on the rendezvous port 29500 and meet over the bridge. The
uninterrupted run is launched by torchrun with DeepSpeed ZeRO-2 over gloo (optimizer state and gradients
sharded across the two pods) and goes on to Serving: its adapter is loaded into the namespace's vLLM pool,
which the operator reaches at the pool pod's address (the pool starts while the second run trains). The
killed run is launched by `accelerate launch` with plain data parallel (ZeRO would compile DeepSpeed's comm
op again in each pod of both its attempts), so both launchers rendezvous through the headless Service by
name; ZeRO-2 shards the same optimisation, so both runs end at the same validation loss.

Once the first checkpoint is complete, every process of the rank-1 pod is killed (SIGKILL, as the OOM
killer or a lost node would), so rank 0 loses its peer mid-step. The training Job fails (infrastructure: exit 137 matches no FailJob rule); the
operator starts attempt 2, whose two pods meet again through the headless Service and both resume from
that checkpoint. The final validation loss must match the uninterrupted run of the same spec (run first,
in the same namespace) within a small tolerance. The rendezvous and per-rank step lines of every training
pod are printed.
"""

from __future__ import annotations

import ipaddress
import json
import signal

import psutil
import pytest

from finetune_trainer.train.checkpoint import latest_checkpoint
from tests.harness.demo import host_mount_root
from tests.harness.operator import RANK_LINE, Operator, seed_claims, setup_namespace, status, training_pod_lines, wait_for
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS

pytestmark = pytest.mark.e2e

MAX_STEPS = 12
SAVE_STEPS = 4
LOSS_TOLERANCE = 0.02  # absolute, on a validation loss of about 1-3; a wrong resume is off by far more
POOL_DEFINITION = {"replicas": 1, "gpus": 0, "cpu": "1", "memory": "4Gi", "maxLoraRank": 16, "maxModelLen": 256,
                   "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}
SERVING = {"mode": "adapter", "gpus": 0, "maxModelLen": 256, "cpu": "1", "memory": "4Gi"}


def manifest(name: str, namespace: str, launcher: str, zero2_and_serve: bool) -> dict:
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "pvc://models/tiny-chat", "dtype": "float32"},
            "datasets": {"train": {"uri": "pvc://data/train.jsonl", "format": "messages"},
                         "validation": {"uri": "pvc://data/validation.jsonl", "format": "messages"},
                         "maxLength": 128},
            "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
            "hyperparameters": {"maxSteps": MAX_STEPS, "saveSteps": SAVE_STEPS, "learningRate": 0.003,
                                "batchSize": 16, "microBatchSize": 8, "seed": 7},
            "resources": {"nodes": 2, "gpusPerNode": 0, "cpuMultiNode": True, "processesPerNode": 1,
                          "launcher": launcher, "precision": "fp32", "cpu": "1", "memory": "4Gi",
                          "deepspeed": {"zeroStage": 2 if zero2_and_serve else 0}},
            "evaluation": {"enabled": False},
            "serving": SERVING if zero2_and_serve else {"enabled": False},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0},
        },
    }


def finished(cluster, namespace: str, name: str) -> dict | None:
    current = status(cluster, namespace, name)
    return current if current.get("phase") in ("Serving", "Succeeded", "Failed", "Rejected") else None


def trained(cluster, namespace: str, name: str) -> dict | None:
    current = status(cluster, namespace, name)
    return current if current.get("phase") in ("Deploying", "Serving", "Succeeded", "Failed", "Rejected") else None


def training_pod_ips(cluster, namespace: str, name: str) -> dict[str, str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                      f"finetune.dev/job={name},finetune.dev/phase=train", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods}


def kill_rank_1(cluster, namespace: str, name: str) -> None:
    """SIGKILL every process of attempt 1's rank-1 pod at once, as a lost node or the OOM killer would: the
    launcher (the local runner's container id is its pid) and its workers, which torchrun and accelerate
    start in sessions of their own (a process-group kill would leave them to checkpoint on SIGTERM)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                      f"finetune.dev/job={name},finetune.dev/phase=train", "-o", "json").stdout)["items"]
    rank1 = next(p for p in pods if p["metadata"]["name"].startswith(f"{name}-train-a0-1-"))
    launcher = psutil.Process(int(rank1["status"]["containerStatuses"][0]["containerID"].removeprefix("local://")))
    for process in [*launcher.children(recursive=True), launcher]:
        process.send_signal(signal.SIGKILL)


def test_two_pods_serve_with_zero2_and_a_killed_rank_resumes_both_from_the_checkpoint(
        cluster, local_runner, namespace, operator_kubeconfig, tmp_path):
    setup_namespace(cluster, namespace)
    artifacts = seed_claims(cluster, namespace, ("train", "validation"))
    # the operator names adapter paths at run time (the pool's load calls): under this root they are host paths too
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("models", "data", "finetune-artifacts"))
    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log", FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
        FT_PROGRESS_INTERVAL_SECONDS="5", FT_POD_NODE_SELECTOR=json.dumps(NODE_SELECTOR),
        FT_POD_TOLERATIONS=json.dumps(TOLERATIONS), FT_PVC_MOUNT_ROOT=str(mount_root),
        FT_ADAPTER_POOL=json.dumps(POOL_DEFINITION),
    ).start()
    try:
        cluster.apply(manifest("reference", namespace, "torchrun", zero2_and_serve=True))
        reference = wait_for("the uninterrupted run to train", lambda: trained(cluster, namespace, "reference"),
                             timeout=1500, interval=2)
        assert reference["phase"] in ("Deploying", "Serving"), f"{reference}\n{operator.log_tail(40)}"

        ips = training_pod_ips(cluster, namespace, "reference")
        print("training pod addresses:", ips)
        assert len(set(ips.values())) == 2, ips  # one address per pod: both listened on 29500
        if local_runner.bridge:
            assert all(ipaddress.ip_address(a) in local_runner.bridge.network for a in ips.values()), ips

        reference_lines = training_pod_lines(cluster, local_runner, namespace, "reference")
        for pod, found in sorted(reference_lines.items()):
            print(f"--- training pod {pod}", *found, sep="\n")
        ranks = [m.groups() for found in reference_lines.values() for line in found if (m := RANK_LINE.search(line))]
        # two pods, one rank each, met at pod 0's name under the headless Service and trained every step
        assert {(m[0], m[2], m[3]) for m in ranks if m[3]} == {
            ("0", "reference-train-a0-0", "reference-train-a0-0.reference-train:29500"),
            ("1", "reference-train-a0-1", "reference-train-a0-0.reference-train:29500")}, ranks
        assert sorted((m[0], m[4], m[5]) for m in ranks if m[4]) == [
            ("0", str(MAX_STEPS), str(MAX_STEPS)), ("1", str(MAX_STEPS), str(MAX_STEPS))], ranks
        record = json.loads((artifacts / namespace / "reference" / "run.json").read_text())
        assert record["deepspeed"]["zero_optimization"]["stage"] == 2 and record["hyperparameters"]["world_size"] == 2

        cluster.apply(manifest("killed", namespace, "accelerate", zero2_and_serve=False))
        checkpoints = artifacts / namespace / "killed" / "checkpoints"
        first = wait_for("the first complete checkpoint", lambda: latest_checkpoint(checkpoints), timeout=1500,
                         interval=0.5)
        kill_rank_1(cluster, namespace, "killed")
        final = wait_for("the killed run to finish", lambda: finished(cluster, namespace, "killed"),
                         timeout=1500, interval=2)

        reference = wait_for("the uninterrupted run to serve", lambda: finished(cluster, namespace, "reference"),
                             timeout=600, interval=2)
        assert reference["phase"] == "Serving", f"{reference}\n{operator.log_tail(40)}"
        assert {"reference", "reference@1"} <= set(reference["serving"]["modelNames"]), reference["serving"]

        lines = training_pod_lines(cluster, local_runner, namespace, "killed")
        for pod, found in sorted(lines.items()):
            print(f"--- training pod {pod}", *found, sep="\n")
        print(f"reference progress {reference['progress']}\nkilled progress {final['progress']}")
        assert final["phase"] == "Succeeded", f"{final}\n{operator.log_tail(40)}"
        assert final["attempts"]["count"] == 2 and final["attempts"]["infrastructureFailures"] == 1, final["attempts"]

        # attempt 2: both pods met again by name and resumed from a checkpoint at or after the first one
        second = [RANK_LINE.search(line).groups() for pod, found in lines.items() if "-train-a1-" in pod
                  for line in found]
        resumed = {m.group(1): line for pod, found in lines.items() if "-train-a1-" in pod for line in found
                   if (m := RANK_LINE.search(line)) and m.group(5) and "resumed from checkpoint-" in line}
        assert {m[0] for m in second if m[3]} == {"0", "1"}, second
        assert set(resumed) == {"0", "1"}, resumed
        start = {int(line.rsplit("checkpoint-", 1)[1]) for line in resumed.values()}
        assert len(start) == 1 and int(first.name.split("-")[1]) <= start.pop() < MAX_STEPS, resumed
        assert {(m[4], m[5]) for m in second if m[4]} == {(str(MAX_STEPS), str(MAX_STEPS))}, second

        # and ended where the uninterrupted run ended
        assert final["progress"]["step"] == reference["progress"]["step"] == MAX_STEPS
        assert abs(final["progress"]["evalLoss"] - reference["progress"]["evalLoss"]) <= LOSS_TOLERANCE, (
            final["progress"], reference["progress"])
    finally:
        for name in ("reference", "killed"):
            cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false", check=False)
        operator.stop()

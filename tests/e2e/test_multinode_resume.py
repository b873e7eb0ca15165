"""Multi-node training on real processes, and a rank that dies mid-training: `nodes: 2` on CPU
(`cpuMultiNode`). Each pod has a network namespace and an address of its own on the local runner's pod
bridge, so both listen on the rendezvous port 29500 and meet over the bridge. The uninterrupted run has two
processes per pod (four ranks), is launched by torchrun with DeepSpeed ZeRO-2 over gloo (optimizer state and
gradients sharded across the four ranks of both pods) and goes on to Serving: its adapter is loaded into the
namespace's vLLM pool at the pool pod's address (a per-replica call), and the smoke request asks the job's
Service by its cluster DNS name, which the operator resolves through CoreDNS and the runner's Service proxy
forwards. The killed run, one process per pod, is launched by `accelerate launch` with plain data parallel
(ZeRO would compile DeepSpeed's comm op again in each pod of both its attempts), so both launchers rendezvous
through the headless Service by name; the global batch is the same 16 samples per step in both runs, so both
end at the same validation loss. Its evaluation's default judge is the adapter pool, which the evaluation pod
asks by the pool Service's name (the killed run starts once the pool serves).

Once the first checkpoint is complete, every process of the rank-1 pod is killed (SIGKILL, as the OOM
killer or a lost node would), so rank 0 loses its peer mid-step. The training Job fails (infrastructure: exit 137 matches no FailJob rule); the
operator starts attempt 2, whose two pods meet again through the headless Service and both resume from
that checkpoint. The final validation loss must match the uninterrupted run (run first,
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
from tests.harness.operator import (RANK_LINE, Operator, get, seed_claims, setup_namespace, status,
                                   training_pod_lines, wait_for)
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS

pytestmark = pytest.mark.e2e

MAX_STEPS = 12
SAVE_STEPS = 4
LOSS_TOLERANCE = 0.02  # absolute, on a validation loss of about 1-3; a wrong resume is off by far more
POOL_DEFINITION = {"replicas": 1, "gpus": 0, "cpu": "1", "memory": "4Gi", "maxLoraRank": 16, "maxModelLen": 256,
                   "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}
SERVING = {"mode": "adapter", "gpus": 0, "maxModelLen": 256, "cpu": "1", "memory": "4Gi"}
JUDGE = {"name": "helpful", "type": "score_model", "rubric": "Is the answer helpful?", "maxRetries": 0,
         "timeoutSeconds": 120}
JUDGED_EVALUATION = {"metrics": ["exact_match"], "graders": [JUDGE], "maxItems": 2, "compareToBase": False,
                     "maxNewTokens": 4, "backend": "transformers"}
"""The killed run's evaluation: its default judge is the adapter pool the uninterrupted run serves in."""


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
                                "batchSize": 16, "microBatchSize": 4, "seed": 7},
            "resources": {"nodes": 2, "gpusPerNode": 0, "cpuMultiNode": True,
                          "processesPerNode": 2 if zero2_and_serve else 1,
                          "launcher": launcher, "precision": "fp32", "cpu": "1", "memory": "4Gi",
                          "deepspeed": {"zeroStage": 2 if zero2_and_serve else 0}},
            "evaluation": {"enabled": False} if zero2_and_serve else JUDGED_EVALUATION,
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


def assert_forwarded(cluster, local_runner, namespace: str, service: str, client: str = "") -> str:
    """The runner's Service proxy log line of a connection to `service`'s ClusterIP (from `client`, when
    given) forwarded to a pod: the caller named the Service, CoreDNS gave it the ClusterIP."""
    cluster_ip = get(cluster, namespace, "service", service)["spec"]["clusterIP"]
    prefix = f"service proxy: {namespace}/{service} {cluster_ip}:8000: connection from {client}"
    line = next((x for x in local_runner.log_file.read_text().splitlines() if prefix in x), "")
    forwarded_to = line.rsplit(" forwarded to ", 1)[-1].rsplit(":", 1)[0] if line else ""
    assert line and ipaddress.ip_address(forwarded_to) in local_runner.bridge.network, prefix
    return line


def test_two_pods_serve_with_zero2_and_a_killed_rank_resumes_both_from_the_checkpoint(
        cluster, local_runner, namespace, operator_kubeconfig, tmp_path):
    setup_namespace(cluster, namespace)
    artifacts = seed_claims(cluster, namespace, ("train", "validation"))
    # the operator names adapter paths at run time (the pool's load calls): under this root they are host paths too
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("models", "data", "finetune-artifacts"))
    # the operator resolves through the cluster DNS, as in a cluster (with the runner's pod bridge)
    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log", local_runner, FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
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
        # two pods, two ranks each, met at pod 0's name under the headless Service and trained every step
        rendezvous = "reference-train-a0-0.reference-train:29500"
        assert sorted((m[0], m[1], m[2], m[3]) for m in ranks if m[3]) == [
            ("0", "4", "reference-train-a0-0", rendezvous), ("1", "4", "reference-train-a0-0", rendezvous),
            ("2", "4", "reference-train-a0-1", rendezvous), ("3", "4", "reference-train-a0-1", rendezvous)], ranks
        assert sorted((m[0], m[4], m[5]) for m in ranks if m[4]) == [
            (str(rank), str(MAX_STEPS), str(MAX_STEPS)) for rank in range(4)], ranks
        record = json.loads((artifacts / namespace / "reference" / "run.json").read_text())
        assert record["deepspeed"]["zero_optimization"]["stage"] == 2 and record["hyperparameters"]["world_size"] == 4

        # the smoke request went to the job's Service by name (resolved by CoreDNS, forwarded by the runner's proxy)
        reference = wait_for("the uninterrupted run to serve", lambda: finished(cluster, namespace, "reference"),
                             timeout=600, interval=2)
        assert reference["phase"] == "Serving", f"{reference}\n{operator.log_tail(40)}"
        assert {"reference", "reference@1"} <= set(reference["serving"]["modelNames"]), reference["serving"]
        smoke = next(c for c in reference["conditions"] if c["type"] == "Ready")["message"]
        print("smoke request:", smoke)
        if local_runner.bridge:
            assert smoke.endswith(f" at http://reference-serve.{namespace}.svc:8000"), smoke
            print(assert_forwarded(cluster, local_runner, namespace, "reference-serve"))

        # the killed run's evaluation asks the pool's Service, which is ready now
        cluster.apply(manifest("killed", namespace, "accelerate", zero2_and_serve=False))
        checkpoints = artifacts / namespace / "killed" / "checkpoints"
        first = wait_for("the first complete checkpoint", lambda: latest_checkpoint(checkpoints), timeout=1500,
                         interval=0.5)
        kill_rank_1(cluster, namespace, "killed")
        final = wait_for("the killed run to finish", lambda: finished(cluster, namespace, "killed"),
                         timeout=1500, interval=2)

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

        # its evaluation Job asked the default judge at the pool's Service name, and vLLM answered
        evaluation = get(cluster, namespace, "job", "killed-eval")
        judge = next(e["value"] for e in evaluation["spec"]["template"]["spec"]["containers"][0]["env"]
                     if e["name"] == "FT_JUDGE_ENDPOINT")
        pool = judge.removeprefix("http://").split(".", 1)[0]
        report = json.loads((artifacts / namespace / "killed" / "eval" / "report.json").read_text())
        errors = [r["tuned"]["graderErrors"].get("helpful") for r in report["results"]]
        print(f"judge {judge}: errors {errors}")
        assert len(errors) == 2 and all(e is None or "the judge replied" in e for e in errors), errors
        if local_runner.bridge:
            assert judge == f"http://{pool}.{namespace}.svc:8000/v1", judge
            eval_pod = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                                  "batch.kubernetes.io/job-name=killed-eval", "-o", "json").stdout)
            print(assert_forwarded(cluster, local_runner, namespace, pool,
                                   client=eval_pod["items"][0]["status"]["podIP"]))

        # and ended where the uninterrupted run ended
        assert final["progress"]["step"] == reference["progress"]["step"] == MAX_STEPS
        assert abs(final["progress"]["evalLoss"] - reference["progress"]["evalLoss"]) <= LOSS_TOLERANCE, (
            final["progress"], reference["progress"])
    finally:
        for name in ("reference", "killed"):
            cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false", check=False)
        operator.stop()

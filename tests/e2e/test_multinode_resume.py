"""Multi-node training on real processes, and a rank that dies mid-training: `nodes: 2` on CPU
(`cpuMultiNode`), one process per pod, plain data parallel over gloo (ZeRO would compile DeepSpeed's comm
op in every pod of all three attempts: minutes of CI). The uninterrupted run is launched by torchrun, the
killed one by `accelerate launch`, so both launchers rendezvous through the headless Service by name.

Once the first checkpoint is complete, every process of the rank-1 pod is killed (SIGKILL, as the OOM
killer or a lost node would), so rank 0 loses its peer mid-step. The training Job fails (infrastructure: exit 137 matches no FailJob rule); the
operator starts attempt 2, whose two pods meet again through the headless Service and both resume from
that checkpoint. The final validation loss must match the uninterrupted run of the same spec (run first,
in the same namespace) within a small tolerance. The rendezvous and per-rank step lines of every training
pod are printed.
"""

from __future__ import annotations

import json
import signal

import psutil
import pytest

from finetune_trainer.train.checkpoint import latest_checkpoint
from tests.harness.operator import RANK_LINE, Operator, seed_claims, setup_namespace, status, training_pod_lines, wait_for
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS

pytestmark = pytest.mark.e2e

MAX_STEPS = 12
SAVE_STEPS = 4
LOSS_TOLERANCE = 0.02  # absolute, on a validation loss of about 1-3; a wrong resume is off by far more


def manifest(name: str, namespace: str, launcher: str) -> dict:
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
                          "launcher": launcher, "precision": "fp32", "cpu": "1", "memory": "4Gi"},
            "evaluation": {"enabled": False},
            "serving": {"enabled": False},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0},
        },
    }


def finished(cluster, namespace: str, name: str) -> dict | None:
    current = status(cluster, namespace, name)
    return current if current.get("phase") in ("Succeeded", "Failed", "Rejected") else None


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


def test_a_killed_rank_resumes_both_pods_from_the_checkpoint(cluster, local_runner, namespace, operator_kubeconfig,
                                                              tmp_path):
    setup_namespace(cluster, namespace)
    artifacts = seed_claims(cluster, namespace, ("train", "validation"))
    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log", FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
        FT_PROGRESS_INTERVAL_SECONDS="5", FT_POD_NODE_SELECTOR=json.dumps(NODE_SELECTOR),
        FT_POD_TOLERATIONS=json.dumps(TOLERATIONS),
    ).start()
    try:
        cluster.apply(manifest("reference", namespace, "torchrun"))
        reference = wait_for("the uninterrupted run", lambda: finished(cluster, namespace, "reference"),
                             timeout=1500, interval=2)
        assert reference["phase"] == "Succeeded", f"{reference}\n{operator.log_tail(40)}"

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

        cluster.apply(manifest("killed", namespace, "accelerate"))
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

        # and ended where the uninterrupted run ended
        assert final["progress"]["step"] == reference["progress"]["step"] == MAX_STEPS
        assert abs(final["progress"]["evalLoss"] - reference["progress"]["evalLoss"]) <= LOSS_TOLERANCE, (
            final["progress"], reference["progress"])
    finally:
        for name in ("reference", "killed"):
            cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false", check=False)
        operator.stop()

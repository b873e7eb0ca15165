"""The embedded queue's Kopf handler against the real control plane: two queues under contention,
StrictFIFO blocking, preemption, and a restart that admits nothing twice.

Only `finetune_operator.handlers.queue` runs here (`kopf run -m`); the job handler's part (moving a job
to Queued after validation, un-admitting an evicted job) is played by status-subresource patches, so the
test pins the queue's own contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster, wait_for

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]


def queue_manifest(name: str, gpus: int, **spec: object) -> dict:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneQueue",
        "metadata": {"name": name},
        "spec": {"flavors": [{"name": "a100", "nodeLabels": {"nvidia.com/gpu.product": "A100"},
                              "resources": [{"name": "nvidia.com/gpu", "nominal": str(gpus)}]}], **spec},
    }


def job_manifest(name: str, namespace: str, queue: str, gpus: int, priority: str | None = None) -> dict:
    ref = {"name": queue, **({"priorityClass": priority} if priority else {})}
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": "pvc://models/tiny"}, "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
                 "queue": ref, "resources": {"nodes": 1, "gpusPerNode": gpus}},
    }


def set_status(cluster: Cluster, namespace: str, name: str, status: dict) -> None:
    cluster.kubectl("-n", namespace, "patch", "finetunejob", name, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))


def queue_status(cluster: Cluster, namespace: str, name: str) -> dict:
    out = cluster.kubectl("-n", namespace, "get", "finetunejob", name, "-o", "json").stdout
    return (json.loads(out).get("status") or {}).get("queue") or {}


def start_queue_handler(cluster: Cluster, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "FT_QUEUE_MODE": "embedded", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "-m", "finetune_operator.handlers.queue"],
        env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )


@pytest.fixture
def queue_names(cluster: Cluster) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:5]
    names = (f"alpha-{suffix}", f"beta-{suffix}")
    yield names
    cluster.kubectl("delete", "finetunequeue", *names, "--wait=false", check=False)


def test_two_queues_contend_preempt_and_survive_a_restart(
    cluster: Cluster, namespace: str, queue_names: tuple[str, str], tmp_path: Path
) -> None:
    alpha, beta = queue_names
    cluster.apply([
        queue_manifest(alpha, 8, priorityClasses=[{"name": "low", "value": 0}, {"name": "high", "value": 100}],
                       defaultPriority=0, preemption={"withinQueue": "LowerPriority", "gracePeriodSeconds": 0}),
        queue_manifest(beta, 8, strategy="StrictFIFO"),
    ])
    jobs = {"a1": (alpha, 4), "a2": (alpha, 4), "a3": (alpha, 4), "b1": (beta, 6), "b2": (beta, 4), "b3": (beta, 2)}
    for name, (queue, gpus) in jobs.items():
        cluster.apply(job_manifest(name, namespace, queue, gpus))
        set_status(cluster, namespace, name, {"phase": "Queued"})
        time.sleep(1.1)  # distinct creation seconds: the age order is part of the contract
    handler = start_queue_handler(cluster, tmp_path / "kopf.log")
    try:
        def admitted() -> set[str]:
            return {n for n in jobs if queue_status(cluster, namespace, n).get("admitted")}

        wait_for(lambda: admitted() == {"a1", "a2", "b1"}, timeout=90, what="a1, a2, b1 admitted")
        a3, b2, b3 = (queue_status(cluster, namespace, n) for n in ("a3", "b2", "b3"))
        assert (a3["position"], b2["position"], b3["position"]) == (1, 1, 2)
        assert "StrictFIFO: waiting behind" in b3["message"], "b3 would fit in the 2 free GPUs but StrictFIFO blocks it"
        assert queue_status(cluster, namespace, "a1")["resources"]["nvidia.com/gpu"] == "4"
        wait_for(lambda: "nvidia.com/gpu 8/8" in cluster.kubectl("get", "ftq", alpha).stdout, timeout=30, what="ftq usage")
        row = cluster.kubectl("get", "ftq", alpha, "--no-headers").stdout.split()
        assert row[-3:-1] == ["2", "1"], f"admitted and pending columns: {row}"

        for name in ("a1", "a2"):
            set_status(cluster, namespace, name, {"phase": "Training"})
        cluster.apply(job_manifest("urgent", namespace, alpha, 4, priority="high"))
        set_status(cluster, namespace, "urgent", {"phase": "Queued"})
        wait_for(lambda: "preempting" in queue_status(cluster, namespace, "urgent").get("message", ""),
                 timeout=60, what="urgent preempts")
        victims = [n for n in ("a1", "a2") if queue_status(cluster, namespace, n).get("evictionRequested")]
        assert len(victims) == 1, f"exactly one 4-GPU job makes room for a 4-GPU job: {victims}"
        assert not queue_status(cluster, namespace, "urgent").get("admitted"), "no admission before the victim leaves"

        set_status(cluster, namespace, victims[0], {"phase": "Queued", "queue": {"admitted": False}})
        wait_for(lambda: queue_status(cluster, namespace, "urgent").get("admitted"), timeout=60, what="urgent admitted")
        victim = queue_status(cluster, namespace, victims[0])
        assert victim["admitted"] is False and victim["evictionRequested"] is False and victim["position"] >= 1
    finally:
        handler.terminate()
        handler.wait(timeout=30)

    before = {n: queue_status(cluster, namespace, n) for n in (*jobs, "urgent")}
    restarted = start_queue_handler(cluster, tmp_path / "kopf-restarted.log")
    try:
        wait_for(lambda: "first cycle done" in (tmp_path / "kopf-restarted.log").read_text(),
                 timeout=60, what="a cycle after restart")
        time.sleep(6)  # a few more cycles
        after = {n: queue_status(cluster, namespace, n) for n in before}
        assert {n for n, s in after.items() if s.get("admitted")} == {n for n, s in before.items() if s.get("admitted")}
        assert all(after[n].get("admittedAt") == before[n].get("admittedAt") for n in after if after[n].get("admitted"))
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)

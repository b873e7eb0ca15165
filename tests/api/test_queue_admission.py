"""The embedded queue's Kopf handler against the real control plane: two queues under contention,
StrictFIFO blocking, preemption, and a restart that admits nothing twice; then the whole operator with its
queue admitting evaluation and serving after training.

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


def start_queue_handler(cluster: Cluster, log: Path, **settings: str) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "FT_QUEUE_MODE": "embedded", "OMP_NUM_THREADS": "1",
           **settings}
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


def test_an_adapter_pool_is_charged_once_and_its_quota_survives_a_restart(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The pool (2 replicas × 1 GPU, the admin's jobs.adapterPool) of two serving adapters is admitted once
    into the queue the admin names; a 2-GPU training created later waits while the pool holds the quota,
    also after a restart (the queue's status.pools is the record); it is admitted when the pool's last
    adapter stops serving, and the released pool's Deployment (played here by a plain one) goes to 0."""
    queue = f"pools-{uuid.uuid4().hex[:5]}"
    cluster.apply({**queue_manifest(queue, 3), "spec": {"flavors": [
        {"name": "gpu", "resources": [{"name": "nvidia.com/gpu", "nominal": "3"}]}]}})
    digest = {"modelDigest": "sha256:" + "ab" * 32}
    for name in ("ad1", "ad2"):
        adapter = job_manifest(name, namespace, "default", 1)
        adapter["spec"]["serving"] = {"mode": "adapter"}
        cluster.apply(adapter)
        set_status(cluster, namespace, name, {"phase": "Serving" if name == "ad1" else "Deploying", "data": digest})
    time.sleep(1.1)  # distinct creation seconds: the pool is as old as its oldest adapter, older than the training
    cluster.apply(job_manifest("train", namespace, queue, 2))
    set_status(cluster, namespace, "train", {"phase": "Queued"})
    pool_settings = {"FT_ADAPTER_POOL": json.dumps({"queue": queue, "replicas": 2, "gpus": 1})}

    def pools() -> list[dict]:
        out = cluster.kubectl("get", "finetunequeue", queue, "-o", "json").stdout
        return (json.loads(out).get("status") or {}).get("pools") or []

    pool_name = "vllm-tiny-" + "ab" * 5
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": pool_name, "namespace": namespace},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": pool_name}}, "template": {
                       "metadata": {"labels": {"app": pool_name}},
                       "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"}]}}}})
    handler = start_queue_handler(cluster, tmp_path / "kopf.log", **pool_settings)
    try:
        [pool] = wait_for(lambda: (p := pools()) and p[0].get("admitted") and p, timeout=60, what="the pool admitted")
        assert (pool["namespace"], pool["name"]) == (namespace, pool_name)
        assert pool["resources"]["nvidia.com/gpu"] == "2" and pool["flavor"] == "gpu"
        waiting = wait_for(lambda: (q := queue_status(cluster, namespace, "train")).get("position") and q, timeout=30,
                           what="the training waits")
        assert not waiting["admitted"] and "waiting for quota: needs" in waiting["message"] and "nvidia.com/gpu 2" in waiting["message"]
        wait_for(lambda: "nvidia.com/gpu 2/3" in cluster.kubectl("get", "ftq", queue).stdout, timeout=30, what="ftq usage")
    finally:
        handler.terminate()
        handler.wait(timeout=30)

    restarted = start_queue_handler(cluster, tmp_path / "kopf-restarted.log", **pool_settings)
    try:
        wait_for(lambda: "first cycle done" in (tmp_path / "kopf-restarted.log").read_text(), timeout=60,
                 what="a cycle after restart")
        time.sleep(4)  # two more cycles: the training would be admitted by now if the pool's quota were lost
        assert pools() == [pool] and not queue_status(cluster, namespace, "train").get("admitted")
        for name in ("ad1", "ad2"):
            set_status(cluster, namespace, name, {"phase": "Succeeded"})
        wait_for(lambda: queue_status(cluster, namespace, "train").get("admitted"), timeout=30, what="train admitted")
        assert pools() == []
        wait_for(lambda: json.loads(cluster.kubectl("-n", namespace, "get", "deployment", pool_name, "-o", "json").stdout)
                 ["spec"]["replicas"] == 0, timeout=30, what="the released pool scaled to 0 replicas")
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
        cluster.kubectl("delete", "finetunequeue", queue, "--wait=false", check=False)


def workload_job(name: str, namespace: str, queue: str, training_gpus: int, serving: dict) -> dict:
    """A full fine-tune (served merged, no merge step before its evaluation) whose evaluation and serving
    request `serving.gpus` accelerators each."""
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"}, "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
                 "adapter": {"type": "full"}, "queue": {"name": queue}, "resources": {"nodes": 1, "gpusPerNode": training_gpus},
                 "evaluation": {"gates": [{"metric": "exact_match", "min": 0.8}]}, "serving": serving},
    }


def test_evaluation_and_serving_hold_quota_in_the_operators_queue(
    cluster: Cluster, namespace: str, operator_kubeconfig: str, tmp_path: Path
) -> None:
    """The real operator and its queue, 3 GPUs: a merged model serving on 2 holds them while it serves; a
    2-GPU training waits behind it while a 1-GPU one is admitted into what is left; that job's 2-GPU
    evaluation then waits (the job holds nothing meanwhile) until the serving job is deleted; a CPU-only
    evaluation never waits; a re-evaluation stops the serving replicas; an adapter pool is charged once.
    Kwok plays the pods (PodDriver), the pods' summaries are the contract's."""
    from tests.harness.operator import Operator, PodDriver, get, names_of, setup_namespace, status, wait_phase

    queue = f"workloads-{uuid.uuid4().hex[:5]}"
    cluster.apply({**queue_manifest(queue, 3), "spec": {"flavors": [
        {"name": "gpu", "resources": [{"name": "nvidia.com/gpu", "nominal": "3"}]}]}})
    setup_namespace(cluster, namespace)
    pods = PodDriver.passing(cluster, namespace)
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log",
                        FT_ADAPTER_POOL=json.dumps({"queue": queue, "replicas": 2, "gpus": 1})).start()
    try:
        def queued(name: str) -> dict:
            return status(cluster, namespace, name).get("queue") or {}

        def events(reason: str) -> list[str]:
            found = json.loads(cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                               "involvedObject.name=srv", "-o", "json").stdout)["items"]
            return [e["message"] for e in found if e["reason"] == reason]

        cluster.apply(workload_job("srv", namespace, queue, 1, {"mode": "merged", "gpus": 2}))
        serving = wait_for(lambda: (q := queued("srv")).get("workload") == "Serving" and q.get("admitted") and q,
                           timeout=90, what="srv's serving admitted")
        assert serving["resources"]["nvidia.com/gpu"] == "2"
        deployment = wait_for(lambda: get(cluster, namespace, "deployment", "srv-serve"), timeout=30, what="srv-serve")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
        evaluation = get(cluster, namespace, "job", "srv-eval")
        assert evaluation["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
        waited = events("WaitingForQuota")
        assert any("evaluation" in m for m in waited) and any("serving" in m for m in waited), waited

        # A re-evaluation stops the replicas that held the serving quota (released in the same write that
        # asks for the evaluation's), and serves again, admitted again, once the new evaluation passes.
        cluster.kubectl("-n", namespace, "patch", "finetunejob", "srv", "--type=merge",
                        "-p", json.dumps({"spec": {"evaluation": {"maxNewTokens": 16}}}))
        wait_for(lambda: any("the endpoint stops until the new evaluation passes" in m for m in events("SpecChanged")),
                 timeout=60, what="srv re-evaluating, its endpoint stopped")

        def redeployed() -> bool:
            again = get(cluster, namespace, "deployment", "srv-serve")
            return again is not None and again["metadata"]["uid"] != deployment["metadata"]["uid"]

        try:
            wait_for(lambda: (q := queued("srv")).get("workload") == "Serving" and q.get("admitted") and redeployed(),
                     timeout=90, what="srv serving again from a new Deployment")
        except TimeoutError as error:
            raise AssertionError(f"srv: {status(cluster, namespace, 'srv')}\njobs: "
                                 f"{cluster.kubectl('get', 'jobs,pods', '-n', namespace, '-o', 'wide').stdout}") from error

        cluster.apply(workload_job("big", namespace, queue, 2, {"enabled": False, "gpus": 0}))
        time.sleep(1.1)  # distinct creation seconds: big is older than small, so first in line
        cluster.apply(workload_job("small", namespace, queue, 1, {"enabled": False, "gpus": 2}))
        big = wait_for(lambda: (q := queued("big")).get("position") == 1 and q, timeout=60, what="big waits")
        assert not big["admitted"] and "waiting for quota: needs" in big["message"] and "nvidia.com/gpu 2" in big["message"]
        small = wait_for(lambda: (q := queued("small")).get("workload") == "Evaluation" and q.get("position") and q,
                         timeout=60, what="small trained in what was left, its evaluation waits")
        assert small["admitted"] is False and small["position"] == 2, small
        assert status(cluster, namespace, "small")["reason"] == "WaitingForQuota"
        assert get(cluster, namespace, "job", "small-eval") is None
        wait_for(lambda: "nvidia.com/gpu 2/3" in cluster.kubectl("get", "ftq", queue).stdout, timeout=30,
                 what="only srv's serving holds quota")

        cluster.kubectl("-n", namespace, "delete", "finetunejob", "srv", "--wait=false")
        done = wait_phase(cluster, namespace, "big", "Succeeded", timeout=90)
        assert done["queue"]["admitted"] is False  # the CPU-only evaluation took nothing
        try:
            small_done = wait_phase(cluster, namespace, "small", "Succeeded", timeout=90)
        except TimeoutError as error:
            raise AssertionError(f"small: {status(cluster, namespace, 'small')}\nftq: "
                                 f"{cluster.kubectl('get', 'ftq', queue, '-o', 'json').stdout}") from error
        assert small_done["queue"]["workload"] == "Evaluation" and small_done["queue"]["admitted"] is False
        wait_for(lambda: "nvidia.com/gpu 0/3" in cluster.kubectl("get", "ftq", queue).stdout, timeout=30,
                 what="every workload released its quota")

        # The adapter pool (2 replicas × 1 GPU, jobs.adapterPool.queue is this queue) is charged once: its
        # adapter job waits in Deploying, with no pool Deployment, while a serving job holds 2 of the 3
        # GPUs, and the pool is created once the queue admits it.
        cluster.apply(workload_job("blk", namespace, queue, 1, {"mode": "merged", "gpus": 2}))
        wait_for(lambda: (q := queued("blk")).get("workload") == "Serving" and q.get("admitted"), timeout=90,
                 what="blk's serving admitted")
        adapter = workload_job("ad", namespace, queue, 1, {"mode": "adapter", "gpus": 0})
        adapter["spec"].pop("adapter")  # LoRA, served by its base's pool
        cluster.apply(adapter)
        waiting = wait_for(lambda: (s := status(cluster, namespace, "ad")).get("phase") == "Deploying"
                           and "position 1 in FineTuneQueue" in s.get("message", "") and s, timeout=90,
                           what="ad waits for its pool's quota")
        assert waiting["message"].startswith("adapter pool vllm-tiny") and waiting["reason"] == "WaitingForQuota"
        assert not [d for d in names_of(cluster, namespace, "deployment") if d.startswith("vllm-")]
        cluster.kubectl("-n", namespace, "delete", "finetunejob", "blk", "--wait=false")
        pool = wait_for(lambda: next((d for d in names_of(cluster, namespace, "deployment") if d.startswith("vllm-")), None),
                        timeout=60, what="the pool deployed once admitted")
        [record] = json.loads(cluster.kubectl("get", "ftq", queue, "-o", "json").stdout)["status"]["pools"]
        assert (record["name"], record["admitted"], record["resources"]["nvidia.com/gpu"]) == (pool, True, "2")
        assert get(cluster, namespace, "deployment", pool)["spec"]["replicas"] == 2
        wait_for(lambda: "nvidia.com/gpu 2/3" in cluster.kubectl("get", "ftq", queue).stdout, timeout=30,
                 what="the pool's GPUs in the queue's usage")
    finally:
        operator.stop()
        pods.close()
        cluster.kubectl("delete", "finetunequeue", queue, "--wait=false", check=False)

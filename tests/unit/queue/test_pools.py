"""Adapter pools as consumers of the embedded queue (DESIGN.md §6): a pool is wanted while one of its
adapter jobs deploys or serves, is charged once for its replicas, holds what the queue's status records
(so a restart rebuilds the usage), and is released when its last adapter leaves."""

from __future__ import annotations

from decimal import Decimal

import pytest

from finetune_api.queue import PoolAdmission
from finetune_operator.builders.serving import build_serving_objects
from finetune_operator.builders.workloads import pool_requests, queued_pool
from finetune_operator.queue import FlavorQuota, JobView, QueueView, admission_cycle, apply_decisions
from finetune_operator.queue.requests import to_milli
from finetune_operator.queue.status import pool_admissions, queue_status
from finetune_operator.queue.views import pool_demand, pool_views, released_pools
from finetune_operator.settings import AdapterPoolSettings, OperatorSettings
from finetune_api import FineTuneJob

pytestmark = pytest.mark.unit

GPU = "nvidia.com/gpu"
NOW = "2030-01-01T12:00:00Z"
QUEUE = QueueView("gpus", (FlavorQuota("a100", {GPU: 4000}),))
POOL = ("team", "vllm-tiny-0123456789")
POOL_SIZE = {GPU: 2000, "cpu": 8000}


def adapter_job(name: str, phase: str, mode: str = "adapter", deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "team", "creationTimestamp": "2030-01-01T10:00:00Z", "uid": f"u-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T11:00:00Z"
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": meta,
            "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"}, "datasets": {"train": {"uri": "pvc://data/t.jsonl"}},
                     "serving": {"mode": mode}},
            "status": {"phase": phase, "data": {"modelDigest": "sha256:0123456789abcdef"}}}


def training(name: str, gpus: int, created: float, admitted: bool = False) -> JobView:
    return JobView(key=f"team/{name}", namespace="team", queue="gpus", requests={GPU: gpus * 1000}, created=created,
                   phase="Training" if admitted else "Queued", admitted=admitted, flavor="a100" if admitted else None)


def test_a_pool_is_wanted_while_an_adapter_it_serves_deploys_or_serves():
    for phase in ("Deploying", "Serving"):
        assert pool_demand(adapter_job("a", phase)) == (POOL, 1893492000.0)
    assert pool_demand(adapter_job("a", "Evaluating")) is None  # re-evaluating: its adapter is unloaded
    assert pool_demand(adapter_job("a", "Serving", mode="merged")) is None  # its own Deployment, charged itself
    assert pool_demand(adapter_job("a", "Serving", deleting=True)) is None


def test_the_pool_asks_the_size_of_its_deployment_once_and_only_when_it_has_gpus():
    pool = AdapterPoolSettings(replicas=3, gpus=2, cpu="6", memory="40Gi", queue="gpus")
    settings = OperatorSettings(queue_mode="embedded", adapter_pool=pool)
    job = FineTuneJob.model_validate(adapter_job("a", "Deploying"))
    deployment = next(o for o in build_serving_objects(job, settings) if o["kind"] == "Deployment")
    requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert deployment["spec"]["replicas"] == 3
    # as merged serving's: the pod's accelerators, cpu and memory (the scratch's ephemeral-storage is not charged)
    assert pool_requests(pool) == {name: Decimal(to_milli(requests[name])) / 1000 * 3 for name in (GPU, "cpu", "memory")}
    assert pool_requests(pool)[GPU] == Decimal(6)
    assert queued_pool(settings) == "gpus"
    assert queued_pool(settings.model_copy(update={"queue_mode": "kueue"})) is None  # Kueue labels the pool itself
    assert queued_pool(OperatorSettings(queue_mode="embedded", adapter_pool=pool.model_copy(update={"queue": None}))) is None
    assert queued_pool(OperatorSettings(queue_mode="embedded", adapter_pool=pool.model_copy(update={"gpus": 0}))) is None


def test_a_pool_is_admitted_once_counts_in_usage_and_a_later_consumer_waits_behind_it():
    pools = pool_views("gpus", {POOL: 100.0}, [], POOL_SIZE)
    big = training("big", 4, created=200.0)
    small = training("small", 2, created=300.0)
    result = admission_cycle([QUEUE], [*pools, big, small])
    decision = result.jobs["pool/team/vllm-tiny-0123456789"]
    assert decision.admitted and decision.flavor == "a100" and decision.workload == "Serving"
    assert result.queues["gpus"].usage["a100"][GPU] == 4000  # the pool's 2 and small's 2
    assert not result.jobs["team/big"].admitted and "needs nvidia.com/gpu 4" in result.jobs["team/big"].message
    assert result.jobs["team/small"].admitted  # BestEffortFIFO: it fits beside the pool

    records = pool_admissions(result, [POOL], [], NOW)
    assert records == [PoolAdmission(namespace="team", name=POOL[1], admitted=True, admitted_at=NOW, flavor="a100",
                                     resources={GPU: "2", "cpu": "8"}, message="admitted to flavor a100")]
    status = queue_status(result.queues["gpus"], records)
    assert status.usage_summary == "nvidia.com/gpu 4/4" and status.admitted == 2 and status.pools == records

    # An operator restart: the pool's usage is what the queue's status records, the jobs' what theirs do.
    after = apply_decisions([big, small], result)
    again = admission_cycle([QUEUE], [*pool_views("gpus", {POOL: 100.0}, records, POOL_SIZE), *after])
    assert not again.jobs["team/big"].admitted and again.queues["gpus"].usage["a100"][GPU] == 4000
    later = pool_admissions(again, [POOL], records, "2030-01-01T13:00:00Z")
    assert later == records  # admitted once: the time of the first admission is kept

    # The pool's last adapter left: the pool is no longer wanted and its quota goes to the waiting job.
    released = admission_cycle([QUEUE], [*pool_views("gpus", {}, records, POOL_SIZE), *apply_decisions(after, again)])
    assert released.jobs["team/big"].admitted is False  # small still holds 2 of the 4
    assert released.queues["gpus"].usage["a100"][GPU] == 2000
    assert pool_admissions(released, [], records, NOW) == []
    assert released_pools(records, {}) == [POOL]  # its Deployment goes to 0 replicas
    assert released_pools(records, {POOL: 100.0}) == []
    assert released_pools(pool_admissions(result, [POOL], [], NOW)[:0], {}) == []


def test_a_waiting_pool_shows_its_place_and_a_pool_larger_than_the_queue_says_so():
    holder = training("holder", 3, created=50.0, admitted=True)
    result = admission_cycle([QUEUE], [holder, *pool_views("gpus", {POOL: 100.0}, [], POOL_SIZE)])
    [record] = pool_admissions(result, [POOL], [], NOW)
    assert not record.admitted and record.position == 1
    assert record.message == "position 1 in FineTuneQueue gpus: waiting for quota: needs cpu 8, nvidia.com/gpu 2"
    huge = pool_views("gpus", {POOL: 100.0}, [], {GPU: 8000})
    [record] = pool_admissions(admission_cycle([QUEUE], huge), [POOL], [], NOW)
    assert "more than any flavor of FineTuneQueue gpus provides" in record.message


def test_a_pool_is_never_preempted_for_a_higher_priority_job():
    queue = QueueView("gpus", (FlavorQuota("a100", {GPU: 2000}),), priorities={"high": 100}, preempt_lower_priority=True)
    records = pool_admissions(admission_cycle([queue], pool_views("gpus", {POOL: 1.0}, [], POOL_SIZE)), [POOL], [], NOW)
    urgent = JobView(key="team/urgent", namespace="team", queue="gpus", requests={GPU: 2000}, created=5.0, phase="Queued",
                     priority_class="high")
    result = admission_cycle([queue], [*pool_views("gpus", {POOL: 1.0}, records, POOL_SIZE), urgent])
    assert result.evictions == [] and not result.jobs["team/urgent"].admitted

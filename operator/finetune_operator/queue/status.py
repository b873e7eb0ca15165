"""What the embedded queue writes, as the API's status models: a job's `status.queue` and a
FineTuneQueue's status. Pure: a cycle's decisions in, models out (the runtime dumps and patches them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from finetune_api.job import QueueStatus
from finetune_api.queue import FineTuneQueueStatus, PoolAdmission, ResourceUsage

from .admission import CycleResult, JobDecision, QueueSummary, describe
from .requests import format_quantity, from_milli
from .views import PoolKey, pool_consumer_key

MESSAGE_LIMIT = 512


def job_queue_status(decision: JobDecision, current: Mapping[str, Any], now: str) -> QueueStatus:
    """The job's status.queue as the decision says; `admittedAt` keeps the first admission's time."""
    admitted_at = (now if decision.newly_admitted else current.get("admittedAt")) if decision.admitted else None
    return QueueStatus(
        name=decision.queue,
        workload=None if decision.workload == "Training" and "workload" not in current else decision.workload,
        admitted=decision.admitted,
        admitted_at=admitted_at,
        flavor=decision.flavor,
        resources={r: format_quantity(from_milli(v)) for r, v in sorted(decision.resources.items())},
        position=decision.position,
        wait_estimate_seconds=decision.wait_estimate_seconds,
        message=decision.message[:MESSAGE_LIMIT],
        eviction_requested=decision.eviction_requested,
    )


def pool_admissions(result: CycleResult, pools: Iterable[PoolKey], recorded: Iterable[PoolAdmission],
                    now: str) -> list[PoolAdmission]:
    """The queue's `status.pools` after a cycle: one record per wanted pool (`pools`), as the cycle
    decided; `admittedAt` keeps the first admission's time. A pool no longer wanted has no record."""
    previous = {(a.namespace, a.name): a for a in recorded}
    out = []
    for key in sorted(pools):
        decision = result.jobs.get(pool_consumer_key(key))
        if decision is None:
            continue
        before = previous.get(key)
        status = job_queue_status(decision, {"admittedAt": before.admitted_at} if before else {}, now)
        out.append(PoolAdmission(namespace=key[0], name=key[1], admitted=status.admitted, admitted_at=status.admitted_at,
                                 flavor=status.flavor, resources=status.resources, position=status.position,
                                 message=status.message))
    return out


def queue_status(summary: QueueSummary, pools: Iterable[PoolAdmission] = ()) -> FineTuneQueueStatus:
    """The FineTuneQueue's status: usage per flavor and resource (the adapter pools' included), counts, the
    `kubectl get` summary, and the pools' admissions."""
    usage = [
        ResourceUsage(
            flavor=flavor,
            resource=resource,
            used=format_quantity(from_milli(summary.usage.get(flavor, {}).get(resource, 0))),
            nominal=format_quantity(from_milli(nominal)),
        )
        for flavor, quotas in summary.nominal.items()
        for resource, nominal in quotas.items()
    ]
    totals: dict[str, tuple[int, int]] = {}
    for flavor, quotas in summary.nominal.items():
        for resource, nominal in quotas.items():
            used, cap = totals.get(resource, (0, 0))
            totals[resource] = (used + summary.usage.get(flavor, {}).get(resource, 0), cap + nominal)
    text = ", ".join(
        f"{describe({r: u})}/{format_quantity(from_milli(c))}" for r, (u, c) in sorted(totals.items())
    )
    return FineTuneQueueStatus(usage=usage, admitted=summary.admitted, pending=summary.pending, usage_summary=text,
                               pools=list(pools))


def idle_queue_status(warning: str) -> FineTuneQueueStatus:
    """A queue that admits nothing (another queue mode, or an invalid spec): the reason in its summary."""
    return FineTuneQueueStatus(usage_summary=warning)

"""FineTuneJob events (the job's and its children's) to the job controller (`runtime.controller`)."""

from __future__ import annotations

from typing import Any

import kopf

from finetune_api import GROUP, VERSION

from ..builders.common import LABEL_JOB, LABEL_POOL
from ..runtime import context
from . import indexes


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await context.of(memo).jobs.on_job_event(event.get("type"), body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
async def child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await context.of(memo).jobs.on_child_event(body)


@kopf.on.event("", "v1", "pods", labels={LABEL_POOL: kopf.PRESENT})
async def pool_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await context.of(memo).jobs.on_pool_pod_event(body)


def register_kueue(registry: kopf.OperatorRegistry | None = None) -> None:
    """Kueue mode only: Workload events (and their index) reconcile the job they admit.

    Explicit ids: Kopf names handlers by `__qualname__` (`register_kueue.<locals>.…`)."""
    indexes.register_workloads(registry)

    @kopf.on.event("kueue.x-k8s.io", "workloads", id="workload_event", registry=registry)
    async def workload_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await context.of(memo).jobs.on_workload_event(body)

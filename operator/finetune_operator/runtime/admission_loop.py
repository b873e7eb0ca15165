"""The embedded queue at work (DESIGN.md §6): one background loop runs an admission cycle per
FineTuneQueue every CYCLE_SECONDS.

A loop started at startup, not a `@kopf.timer`: Kopf puts a finalizer on every object a timer
serves, and a queue deleted together with the operator (`helm uninstall`) would then never go away.
Queues, jobs and namespaces come from Kopf's in-memory indexes (no polling). Decisions are written as merge
patches of `status.queue`, only for the fields that change, with the job's resourceVersion as a
precondition: a job that changed meanwhile is left for the next cycle. Until the watch shows our own
write, the cycle reads the job as we patched it (`expectations.WrittenQueueStatus`), so a fast cycle
never counts quota twice or misses it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from finetune_api.queue import FineTuneQueueStatus, PoolAdmission

from .. import merge_patch
from ..k8s import K8s, K8sError
from ..builders.workloads import pool_requests, queued_pool
from ..queue import admission_cycle, job_view, queue_view
from ..queue.admission import JobDecision
from ..queue.kueue import embedded_conflicts
from ..queue.requests import to_milli
from ..queue.status import idle_queue_status, job_queue_status, pool_admissions, queue_status
from ..queue.views import pool_views, released_pools
from ..reconcile.observed import format_time
from ..settings import OperatorSettings
from .executor import Executor
from .expectations import WrittenQueueStatus
from .indexes import Indexes

CYCLE_SECONDS = 2.0
log = logging.getLogger("finetune_operator.queue")


class AdmissionLoop:
    """Admission cycles over the live indexes, written back as job and queue status."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, executor: Executor, indexes: Indexes) -> None:
        self.k8s = k8s
        self.settings = settings
        self.executor = executor
        self.indexes = indexes
        self.written = WrittenQueueStatus()
        self.pools: dict[tuple[str, str], list[PoolAdmission]] = {}
        """(queue name, uid) → the adapter pools' admissions as last written to its status."""

    async def run(self) -> None:
        first = True
        while True:
            queues = self.indexes.queues
            for name, bodies in list(queues.items()):
                queue = next(iter(bodies), None)
                if queue is None:
                    continue
                try:
                    await self.executor.call(self.cycle, queue, list(self.indexes.queued_jobs.get(name, ())))
                except Exception:  # one bad cycle must not stop admission for every queue
                    log.exception(f"admission cycle of queue {name} failed")
            if first and len(queues):
                log.info(f"admission loop: first cycle done over {len(queues)} queue(s)")
                first = False
            await asyncio.sleep(CYCLE_SECONDS)

    def cycle(self, queue_body: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]]) -> None:
        """One admission cycle of this queue; writes the jobs' status.queue and the queue's status."""
        name = queue_body["metadata"]["name"]
        snapshots = [self.written.view(s) for s in jobs]
        mode = self.settings.queue_mode
        if mode != "embedded":
            for warning in embedded_conflicts(mode, name, len(snapshots)):
                log.warning(warning)
            self._write_queue(queue_body, idle_queue_status(f"queue mode is {mode}: this queue admits nothing"))
            return
        try:
            queue = queue_view(queue_body)
        except ValueError as error:
            self._write_queue(queue_body, idle_queue_status(f"invalid spec: {error}"))
            return
        wanted = self.indexes.wanted_pools() if name == queued_pool(self.settings) else {}
        recorded = self._pools_recorded(queue_body)
        requests = {r: to_milli(v) for r, v in pool_requests(self.settings.adapter_pool).items()}
        pools = pool_views(name, wanted, recorded, requests)
        result = admission_cycle([queue], [job_view(s) for s in snapshots] + pools, self.indexes.namespace_labels())
        now = format_time(dt.datetime.now(dt.UTC))
        for snapshot in snapshots:
            decision = result.jobs.get(f"{snapshot['metadata']['namespace']}/{snapshot['metadata']['name']}")
            if decision is not None:
                self._write_job(snapshot, decision, now)
        summary = result.queues.get(name)
        admissions = pool_admissions(result, wanted, recorded, now)
        if self._write_queue(queue_body, queue_status(summary, admissions) if summary else idle_queue_status("")):
            for namespace, pool in released_pools(recorded, wanted):
                self._scale_to_zero(namespace, pool)
            self.pools[_identity(queue_body)] = admissions  # after: a scale that failed is tried again

    def _scale_to_zero(self, namespace: str, pool: str) -> None:
        """A released pool's Deployment keeps its object (owners, Service) and runs no replica."""
        try:
            self.k8s.patch("Deployment", namespace, pool, {"spec": {"replicas": 0}})
        except K8sError as error:
            if error.status != 404:
                raise
            return
        log.info(f"adapter pool {namespace}/{pool} released: scaled to 0 replicas")

    def _pools_recorded(self, queue_body: Mapping[str, Any]) -> list[PoolAdmission]:
        """The pools' admissions as this loop last wrote them; at start, as the queue's status says (the
        index may not show our last write yet, and a pool read as waiting would be admitted twice)."""
        identity = _identity(queue_body)
        if identity not in self.pools:
            stored = (queue_body.get("status") or {}).get("pools") or []
            self.pools[identity] = [PoolAdmission.model_validate(p) for p in stored]
        return self.pools[identity]

    def _write_job(self, snapshot: Mapping[str, Any], decision: JobDecision, now: str) -> None:
        meta = snapshot["metadata"]
        current = snapshot["status"].get("queue") or {}
        changes = merge_patch.diff(current, job_queue_status(decision, current, now).to_api())
        if not changes:
            return
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"queue": changes}}
        try:
            self.k8s.patch("FineTuneJob", meta["namespace"], meta["name"], body, subresource="status")
        except K8sError as error:
            if error.status in (404, 409):
                return
            raise
        key = f"{meta['namespace']}/{meta['name']}"
        self.written.wrote(key, meta["resourceVersion"], merge_patch.apply(current, changes))
        if decision.newly_admitted:
            log.info(f"admitted {key} to flavor {decision.flavor}")
        if decision.eviction_requested and not current.get("evictionRequested"):
            log.info(f"requested eviction of {key}: {decision.message}")

    def _write_queue(self, queue_body: Mapping[str, Any], status: FineTuneQueueStatus) -> bool:
        """Patch the queue's status with the fields that changed since the index last saw it; False when
        the queue is gone."""
        changes = merge_patch.diff(queue_body.get("status") or {}, status.to_api())
        if not changes:
            return True
        try:
            self.k8s.patch_status("FineTuneQueue", None, queue_body["metadata"]["name"], changes)
        except K8sError as error:
            if error.status != 404:
                raise
            return False
        return True


def _identity(queue_body: Mapping[str, Any]) -> tuple[str, str]:
    """A queue deleted and created again under its name starts with no pool admitted."""
    meta = queue_body["metadata"]
    return meta["name"], meta.get("uid") or ""

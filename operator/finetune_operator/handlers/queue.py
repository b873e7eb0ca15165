"""Kopf glue of the embedded queue (DESIGN.md §6): one background loop runs an admission cycle per
FineTuneQueue every CYCLE_SECONDS.

A loop started at startup, not a `@kopf.timer`: Kopf puts a finalizer on every object a timer
serves, and a queue deleted together with the operator (`helm uninstall`) would then never go away.
Queues, jobs and namespaces come from Kopf's in-memory indices (no polling). Decisions are written as merge
patches of `status.queue`, only for the fields that change, with the job's resourceVersion as a
precondition: a job that changed meanwhile is left for the next cycle. Until the watch shows our own
write, the cycle reads the job as we patched it, so a fast cycle never counts quota twice or misses it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config

from finetune_api import GROUP, VERSION
from ..k8s import K8s, K8sError
from ..queue import admission_cycle, format_quantity, job_view, queue_view
from ..queue.admission import CycleResult, JobDecision, QueueSummary, describe
from ..queue.kueue import embedded_conflicts
from ..queue.requests import from_milli
from ..reconcile.observed import format_time
from ..settings import OperatorSettings

CYCLE_SECONDS = 2.0
IN_SCOPE_PHASES = frozenset({"Queued", "Training"})

_overlay: dict[str, tuple[str, dict[str, Any]]] = {}
"""Job key → (resourceVersion our patch was made against, status.queue as we wrote it)."""
_overlay_lock = threading.Lock()
_k8s: K8s | None = None


def _api() -> K8s:
    global _k8s
    if _k8s is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _k8s = K8s(client.ApiClient())
    return _k8s


@kopf.index(GROUP, VERSION, "finetunejobs")
def queue_jobs(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Queue name → the jobs that wait in it or hold its quota (just what the cycle reads)."""
    status = body.get("status") or {}
    queue_status = status.get("queue") or {}
    if status.get("phase") not in IN_SCOPE_PHASES and not queue_status.get("admitted"):
        return {}
    spec = body.get("spec") or {}
    snapshot = {
        "metadata": {k: body.metadata.get(k) for k in ("name", "namespace", "creationTimestamp", "resourceVersion")},
        "spec": {"queue": spec.get("queue") or {}, "resources": spec.get("resources") or {}},
        "status": {
            "phase": status.get("phase"),
            "queue": dict(queue_status),
            "progress": {"etaSeconds": (status.get("progress") or {}).get("etaSeconds")},
        },
    }
    return {(spec.get("queue") or {}).get("name") or "default": snapshot}


@kopf.index("", "v1", "namespaces")
def namespace_labels(body: kopf.Body, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace name → its labels, for the queues' namespaceSelector."""
    return {body.metadata.name: dict(body.metadata.labels or {})}


@kopf.index(GROUP, VERSION, "finetunequeues")
def queue_objects(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Queue name → the queue as last seen (spec and status)."""
    return {body.metadata.name: {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.get("status") or {})}}


# kopf injects the indices by name; its ActivityFn protocol cannot declare them.
@kopf.on.startup()  # type: ignore[arg-type]
async def start_admission_loop(memo: kopf.Memo, queue_objects: kopf.Index, queue_jobs: kopf.Index,
                               namespace_labels: kopf.Index, **_: Any) -> None:
    """Start the admission loop; it reads the live indices, so it sees every later change."""
    memo["admission_loop"] = asyncio.create_task(_admission_loop(queue_objects, queue_jobs, namespace_labels))


@kopf.on.cleanup()
async def stop_admission_loop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("admission_loop")
    if task is not None:
        task.cancel()


async def _admission_loop(queues: kopf.Index, queue_jobs: kopf.Index, namespace_labels: kopf.Index) -> None:
    logger = logging.getLogger("finetune_operator.queue")
    settings = OperatorSettings.from_env()
    first = True
    while True:
        for name, bodies in list(queues.items()):
            queue = next(iter(bodies), None)
            if queue is None:
                continue
            try:
                await asyncio.to_thread(admission_cycle_of, queue, queue_jobs.get(name, []), namespace_labels,
                                        settings, logger)
            except Exception:  # one bad cycle must not stop admission for every queue
                logger.exception(f"admission cycle of queue {name} failed")
        if first and len(queues):
            logger.info(f"admission loop: first cycle done over {len(queues)} queue(s)")
            first = False
        await asyncio.sleep(CYCLE_SECONDS)


def admission_cycle_of(queue_body: Mapping[str, Any], jobs: Any, namespace_labels: Mapping[str, Any],
                       settings: OperatorSettings, logger: Any) -> None:
    """One admission cycle of this queue; writes the jobs' status.queue and the queue's status."""
    name = queue_body["metadata"]["name"]
    snapshots = [_with_overlay(s) for s in jobs]
    if settings.queue_mode != "embedded":
        for warning in embedded_conflicts(settings.queue_mode, name, len(snapshots)):
            logger.warning(warning)
        _set_queue_status(queue_body, None, warning=f"queue mode is {settings.queue_mode}: this queue admits nothing")
        return
    labels: dict[str, dict[str, str]] = {ns: next(iter(values), {}) for ns, values in namespace_labels.items()}
    try:
        queue = queue_view(queue_body)
    except ValueError as error:
        _set_queue_status(queue_body, None, warning=f"invalid spec: {error}")
        return
    result = admission_cycle([queue], [job_view(s) for s in snapshots], labels)
    now = format_time(dt.datetime.now(dt.UTC))
    for snapshot in snapshots:
        decision = result.jobs.get(f"{snapshot['metadata']['namespace']}/{snapshot['metadata']['name']}")
        if decision is not None:
            _write_job(snapshot, decision, now, logger)
    _set_queue_status(queue_body, result.queues.get(name))


def _with_overlay(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    meta = snapshot["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    with _overlay_lock:
        entry = _overlay.get(key)
        if entry is None:
            return dict(snapshot)
        if entry[0] != meta.get("resourceVersion"):
            del _overlay[key]
            return dict(snapshot)
    status = dict(snapshot["status"])
    status["queue"] = {**status.get("queue", {}), **entry[1]}
    return {**snapshot, "status": status}


def desired_queue_status(decision: JobDecision, current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The job's status.queue as the decision says; None removes a field (merge patch)."""
    return {
        "name": decision.queue,
        "admitted": decision.admitted,
        "admittedAt": (now if decision.newly_admitted else current.get("admittedAt")) if decision.admitted else None,
        "flavor": decision.flavor,
        "resources": {r: format_quantity(from_milli(v)) for r, v in sorted(decision.resources.items())} or None,
        "position": decision.position,
        "waitEstimateSeconds": decision.wait_estimate_seconds,
        "message": decision.message[:512],
        "evictionRequested": decision.eviction_requested,
    }


def _write_job(snapshot: Mapping[str, Any], decision: JobDecision, now: str, logger: Any) -> None:
    meta = snapshot["metadata"]
    current = snapshot["status"].get("queue") or {}
    desired = desired_queue_status(decision, current, now)
    changes = {k: v for k, v in desired.items() if current.get(k) != v and not (v is None and k not in current)}
    if not changes:
        return
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"queue": changes}}
    try:
        _api().patch("FineTuneJob", meta["namespace"], meta["name"], body, subresource="status")
    except K8sError as error:
        if error.status in (404, 409):
            return
        raise
    with _overlay_lock:
        _overlay[f"{meta['namespace']}/{meta['name']}"] = (meta["resourceVersion"], {**current, **changes})
    if decision.newly_admitted:
        logger.info(f"admitted {meta['namespace']}/{meta['name']} to flavor {decision.flavor}")
    if decision.eviction_requested and not current.get("evictionRequested"):
        logger.info(f"requested eviction of {meta['namespace']}/{meta['name']}: {decision.message}")


def queue_status(summary: QueueSummary) -> dict[str, Any]:
    """The FineTuneQueue's status: usage per flavor and resource, counts, and the `kubectl get` summary."""
    usage = [
        {
            "flavor": flavor,
            "resource": resource,
            "used": format_quantity(from_milli(summary.usage.get(flavor, {}).get(resource, 0))),
            "nominal": format_quantity(from_milli(nominal)),
        }
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
    return {"usage": usage, "admitted": summary.admitted, "pending": summary.pending, "usageSummary": text}


def _set_queue_status(queue_body: Mapping[str, Any], summary: QueueSummary | None, warning: str = "") -> None:
    """Patch the queue's status with the fields that changed since the index last saw it."""
    current = dict(queue_body.get("status") or {})
    desired = queue_status(summary) if summary else {"usage": [], "admitted": 0, "pending": 0, "usageSummary": warning}
    changes = {key: value for key, value in desired.items() if current.get(key) != value}
    if not changes:
        return
    try:
        _api().patch_status("FineTuneQueue", None, queue_body["metadata"]["name"], changes)
    except K8sError as error:
        if error.status != 404:
            raise


__all__ = ["CycleResult", "admission_cycle_of", "desired_queue_status", "namespace_labels", "queue_jobs", "queue_status"]

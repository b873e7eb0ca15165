"""Kopf indexes, one per watched resource, each reduced to what the runtime reads (`runtime.indexes`)."""

from __future__ import annotations

from typing import Any

import kopf

from finetune_api import GROUP, VERSION

from ..builders.common import LABEL_JOB
from ..queue.views import PoolKey, job_snapshot, pool_demand
from ..reconcile import JobState, PodState, WorkloadState, job_state, pod_state, workload_state
from ..runtime import indexes as ids
from ..runtime.controller import parent_of, training_job_of

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@kopf.index("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT}, id=ids.CHILD_JOBS)
def child_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], JobState] | None:
    """Child Jobs by their FineTuneJob."""
    parent = parent_of(body)
    return {parent: job_state(dict(body))} if parent else None


@kopf.index("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT}, id=ids.CHILD_PODS)
def child_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], PodState] | None:
    """Pods by their batch Job."""
    labels = body.metadata.labels or {}
    job_name = next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), None)
    return {(body.metadata.namespace or "", job_name): pod_state(dict(body))} if job_name else None


@kopf.index(GROUP, VERSION, "finetunequeues", id=ids.QUEUES)
def queues(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """FineTuneQueues by name, as last seen."""
    return {body.metadata.name: {"metadata": dict(body.metadata), "spec": dict(body.spec),
                                 "status": dict(body.get("status") or {})}}


@kopf.index(GROUP, VERSION, "finetunejobs", id=ids.QUEUED_JOBS)
def queued_jobs(body: kopf.Body, **_: Any) -> dict[str | PoolKey, Any]:
    """What the embedded queue reads of a FineTuneJob: by queue name, its snapshot when it waits in that
    queue or holds its quota; by (namespace, pool), its creation time when it is an adapter its pool
    serves now (the pools the queue charges). A job that stops matching returns `{}`, never None: Kopf
    keeps an object's previous entry when its index function returns None, so a job that ended its
    training would go on holding the quota as its last snapshot says."""
    entries: dict[str | PoolKey, Any] = {}
    found = job_snapshot(body)
    if found:
        entries[found[0]] = found[1]
    wanted = pool_demand(body)
    if wanted:
        entries[wanted[0]] = wanted[1]
    return entries


@kopf.index("", "v1", "namespaces", id=ids.NAMESPACES)
def namespaces(body: kopf.Body, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace labels, for the queues' namespaceSelector."""
    return {body.metadata.name: dict(body.metadata.labels or {})}


def register_workloads(registry: kopf.OperatorRegistry | None = None) -> None:
    """Kueue mode only (the Workload CRD exists only where Kueue runs): Workloads by their training Job.

    No version in the selector: Kopf watches the group's preferred version (v1beta2 on Kueue v0.17, where
    v1beta1 is deprecated; v1beta1 on releases without v1beta2); the fields read are the same in both.
    """

    @kopf.index("kueue.x-k8s.io", "workloads", id=ids.WORKLOADS, registry=registry)
    def workloads(body: kopf.Body, **_: Any) -> dict[tuple[str, str], WorkloadState] | None:
        train = training_job_of(body)
        return {train: workload_state(dict(body))} if train else None

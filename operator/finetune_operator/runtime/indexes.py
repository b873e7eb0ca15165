"""The Kopf indexes the runtime reads, one per watched resource (registered in `handlers.indexes`).

Kopf fills them from the watches before any handler runs and hands the live objects to every handler;
the startup handler passes them here once, so timer-driven reconciles and the admission loop read the
same live view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..reconcile.observed import JobState, PodState, WorkloadState

CHILD_JOBS = "ft_child_jobs"
CHILD_PODS = "ft_child_pods"
QUEUES = "ft_queues"
QUEUED_JOBS = "ft_queued_jobs"
NAMESPACES = "ft_namespaces"
WORKLOADS = "ft_workloads"

Index = Mapping[Any, Any]
"""A `kopf.Index` (key → a store of values) or, in tests, a dict of lists."""


def _first(index: Index, key: Any) -> Any:
    return next(iter(index.get(key, ())), None)


@dataclass
class Indexes:
    """The live indexes by role; an index that is not registered (Kueue's outside Kueue mode) reads empty."""

    child_jobs: Index = field(default_factory=dict)
    """(namespace, FineTuneJob) → JobState of each child batch Job."""
    child_pods: Index = field(default_factory=dict)
    """(namespace, batch Job) → PodState of each pod."""
    queues: Index = field(default_factory=dict)
    """FineTuneQueue name → the queue object (metadata, spec, status)."""
    queued_jobs: Index = field(default_factory=dict)
    """FineTuneQueue name → snapshots of the jobs waiting in it or holding its quota (`queue.views.job_snapshot`);
    (namespace, adapter pool) → creation times of the adapter jobs the pool serves now (`queue.views.pool_demand`)."""
    namespaces: Index = field(default_factory=dict)
    """Namespace name → its labels."""
    workloads: Index = field(default_factory=dict)
    """(namespace, training Job) → WorkloadState (Kueue mode)."""

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Indexes:
        """The indexes among a Kopf handler's keyword arguments."""
        names = {CHILD_JOBS: "child_jobs", CHILD_PODS: "child_pods", QUEUES: "queues", QUEUED_JOBS: "queued_jobs",
                 NAMESPACES: "namespaces", WORKLOADS: "workloads"}
        return cls(**{attr: kwargs[name] for name, attr in names.items() if name in kwargs})

    def children(self, namespace: str, job: str, uid: str) -> list[JobState]:
        """The FineTuneJob's child Jobs, each with its pods, matched by controller uid: a job deleted and
        created again under the same name does not adopt its predecessor's children."""
        out = []
        for state in list(self.child_jobs.get((namespace, job), ())):
            if state.owner_uid != uid:
                continue
            pods: tuple[PodState, ...] = tuple(sorted(
                (p for p in self.child_pods.get((namespace, state.name), ()) if p.owner_uid == state.uid),
                key=lambda p: p.name))
            out.append(replace(state, pods=pods))
        return out

    def queue(self, name: str) -> dict[str, Any] | None:
        queue: dict[str, Any] | None = _first(self.queues, name)
        return queue

    def workload(self, namespace: str, train_job: str) -> WorkloadState | None:
        workload: WorkloadState | None = _first(self.workloads, (namespace, train_job))
        return workload

    def wanted_pools(self) -> dict[tuple[str, str], float]:
        """Every adapter pool that serves a job now, with its oldest job's creation time."""
        oldest = {key: min(times, default=None) for key, times in list(self.queued_jobs.items()) if isinstance(key, tuple)}
        return {key: created for key, created in oldest.items() if created is not None}

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {ns: next(iter(values), {}) for ns, values in list(self.namespaces.items())}

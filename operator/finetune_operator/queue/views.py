"""The admission cycle's inputs: what it needs to know of a FineTuneQueue and of a FineTuneJob.

Quantities are held as integer thousandths (`to_milli`) so that quota arithmetic is exact and fast.
`queue_view` and `job_view` read the API objects (camelCase dicts, as the API server returns them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_api.common import LabelSelector
from finetune_api.job import FineTuneJobSpec, QueueRef, ResourcesSpec
from finetune_api.queue import Flavor, FineTuneQueueSpec, PoolAdmission
from ..builders.children import served_by_pool
from ..reconcile.observed import parse_time
from .requests import Workload, job_requests, to_milli, workload_requests

Amounts = dict[str, int]
"""Resource name → amount in thousandths."""

HOLDING_PHASES: dict[str, frozenset[str]] = {
    "Training": frozenset({"Queued", "Training"}),
    "Evaluation": frozenset({"Evaluating"}),
    "Serving": frozenset({"Deploying", "Serving", "Rejected"}),
}
"""Phases in which a job admitted for a workload holds its quota: training from admission to its end; the
evaluation Job while Evaluating; serving replicas while they run (a canary rolled back to its base arm
still serves in `Rejected`). Any other phase (Failed, Succeeded, the next workload's) releases it."""
WAITING_PHASE = {"Training": "Queued", "Evaluation": "Evaluating", "Serving": "Deploying"}
"""The phase in which a workload that is not admitted waits for admission."""


def workload_of(queue_status: Mapping[str, Any]) -> Workload:
    """The workload a job's `status.queue` is for (unset: training, as before evaluation and serving queued)."""
    return queue_status.get("workload") or "Training"


@dataclass(frozen=True)
class FlavorQuota:
    """One flavor of a queue with its nominal quota per resource."""

    name: str
    nominal: Amounts


@dataclass(frozen=True)
class QueueView:
    """What the cycle needs of one FineTuneQueue."""

    name: str
    flavors: tuple[FlavorQuota, ...]
    strategy: str = "BestEffortFIFO"
    priorities: Mapping[str, int] = field(default_factory=dict)
    default_priority: int = 0
    preempt_lower_priority: bool = False
    grace_period_seconds: int = 120
    namespace_selector: LabelSelector | None = None

    @property
    def managed(self) -> frozenset[str]:
        """Resources some flavor sets a quota for; requests of any other resource are not limited."""
        return frozenset(r for f in self.flavors for r in f.nominal)


@dataclass(frozen=True)
class JobView:
    """What the cycle needs of one FineTuneJob."""

    key: str
    """`namespace/name`."""
    namespace: str
    queue: str
    requests: Amounts
    created: float
    """Creation time, seconds since the epoch: the age order within a priority."""
    phase: str
    priority_class: str | None = None
    admitted: bool = False
    flavor: str | None = None
    held: Amounts = field(default_factory=dict)
    """Quota recorded in status.queue.resources at admission (what the job holds)."""
    admitted_at: str = ""
    eviction_requested: bool = False
    eta_seconds: int | None = None
    """Training's own estimate of its remaining time, when it reports one."""
    workload: Workload = "Training"
    """What the admission is (or would be) for; only training may be preempted."""

    @property
    def holds_quota(self) -> bool:
        """Admitted and still running that workload: its quota counts as used (rebuilt from status after
        a restart)."""
        return self.admitted and self.phase in HOLDING_PHASES[self.workload]

    @property
    def waiting(self) -> bool:
        """Asks for admission: not admitted, in the phase where its workload waits."""
        return not self.admitted and self.phase == WAITING_PHASE[self.workload]

    @property
    def growth(self) -> Amounts:
        """What a held serving admission lacks of the serving's requests, while it deploys again after a
        `spec.serving` change that asks more (more replicas): asked on top of what it holds, in its flavor."""
        if self.workload != "Serving" or self.phase != WAITING_PHASE["Serving"] or not self.holds_quota:
            return {}
        held = self.holding
        return {name: value - held.get(name, 0) for name, value in self.requests.items() if value > held.get(name, 0)}

    @property
    def kept(self) -> Amounts:
        """What a holder keeps this cycle: a serving that deploys again after a change asking less keeps
        only its new requests (the rest goes back to the queue); anything else keeps what it holds."""
        if self.growth or self.workload != "Serving" or self.phase != WAITING_PHASE["Serving"] or not self.holds_quota:
            return self.holding
        return dict(self.requests)

    @property
    def holding(self) -> Amounts:
        """What the job holds: the admitted amounts, or its requests when the status has none."""
        return self.held or self.requests


def queue_view(obj: Mapping[str, Any]) -> QueueView:
    """A FineTuneQueue object (dict) as the cycle's input; the spec is validated by the API model."""
    spec = FineTuneQueueSpec.model_validate(obj.get("spec") or {})
    return QueueView(
        name=obj["metadata"]["name"],
        flavors=tuple(
            FlavorQuota(f.name, {q.name: to_milli(q.nominal) for q in f.resources}) for f in spec.flavors
        ),
        strategy=spec.strategy,
        priorities={p.name: p.value for p in spec.priority_classes},
        default_priority=spec.default_priority,
        preempt_lower_priority=spec.preemption.within_queue == "LowerPriority",
        grace_period_seconds=spec.preemption.grace_period_seconds,
        namespace_selector=spec.namespace_selector,
    )


def job_view(obj: Mapping[str, Any]) -> JobView:
    """A FineTuneJob object (dict) as the cycle's input: requests from spec, admission from status."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    queue_status = status.get("queue") or {}
    ref = QueueRef.model_validate(spec.get("queue") or {})
    workload = workload_of(queue_status)
    if workload == "Training":  # the common case reads only the resources (a cycle may see thousands)
        requests = job_requests(ResourcesSpec.model_validate(spec.get("resources") or {}))
    else:
        requests = workload_requests(FineTuneJobSpec.model_validate(spec), workload)
    return JobView(
        key=f"{meta['namespace']}/{meta['name']}",
        namespace=meta["namespace"],
        queue=ref.name,
        requests={name: to_milli(value) for name, value in requests.items()},
        created=_timestamp(meta.get("creationTimestamp")),
        phase=status.get("phase") or "Pending",
        priority_class=ref.priority_class,
        admitted=bool(queue_status.get("admitted")),
        flavor=queue_status.get("flavor"),
        held={name: to_milli(value) for name, value in (queue_status.get("resources") or {}).items()},
        admitted_at=queue_status.get("admittedAt") or "",
        eviction_requested=bool(queue_status.get("evictionRequested")),
        eta_seconds=(status.get("progress") or {}).get("etaSeconds") if workload == "Training" else None,
        workload=workload,
    )


def job_snapshot(obj: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(queue name, the part of a FineTuneJob the cycle reads); None unless one of its workloads waits
    for admission, runs admitted, or still holds an admission."""
    status = obj.get("status") or {}
    queue_status = status.get("queue") or {}
    workload = workload_of(queue_status)
    phase = status.get("phase")
    if phase not in HOLDING_PHASES[workload] and not queue_status.get("admitted"):
        return None
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    snapshot = {
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "creationTimestamp", "resourceVersion")},
        "spec": {k: spec[k] for k in (_TRAINING_SPEC if workload == "Training" else _WORKLOAD_SPEC) if k in spec},
        "status": {
            "phase": status.get("phase"),
            "queue": dict(queue_status),
            "progress": {"etaSeconds": (status.get("progress") or {}).get("etaSeconds")},
        },
    }
    return (spec.get("queue") or {}).get("name") or "default", snapshot


_TRAINING_SPEC = ("queue", "resources")
_WORKLOAD_SPEC = ("model", "datasets", "queue", "resources", "adapter", "serving")
"""What `workload_requests` reads of evaluation and serving, plus what a spec cannot validate without."""


PoolKey = tuple[str, str]
"""(namespace, pool name)"""


def pool_demand(obj: Mapping[str, Any]) -> tuple[PoolKey, float] | None:
    """(its pool, the job's creation time) when a FineTuneJob (dict) is an adapter that its pool serves
    now (Deploying or Serving): a pool is wanted while it has one such job, and is as old as its oldest."""
    found = served_by_pool(obj)
    if found is None:
        return None
    meta = obj["metadata"]
    return (meta["namespace"], found[1]), _timestamp(meta.get("creationTimestamp"))


def pool_consumer_key(pool: PoolKey) -> str:
    """A pool's key in the cycle: `pool/<namespace>/<name>`, never a job's `<namespace>/<name>`."""
    return f"pool/{pool[0]}/{pool[1]}"


def pool_views(queue: str, demands: Mapping[PoolKey, float], recorded: Iterable[PoolAdmission],
               requests: Amounts) -> list[JobView]:
    """The wanted adapter pools as consumers of `queue`'s cycle, each charged `requests` once (DESIGN.md
    §6). A pool is a serving workload that is never evicted, at the queue's default priority, ordered by
    its oldest adapter job's age; it holds what its record in the queue's status says (rebuilt after a
    restart) and waits while it has none. A recorded pool no longer wanted is left out: released."""
    admissions = {(a.namespace, a.name): a for a in recorded}
    views = []
    for key, created in sorted(demands.items()):
        record = admissions.get(key)
        admitted = record is not None and record.admitted
        views.append(JobView(
            key=pool_consumer_key(key),
            namespace=key[0],
            queue=queue,
            requests=dict(requests),
            created=created,
            phase="Serving" if admitted else "Deploying",
            admitted=admitted,
            flavor=record.flavor if record is not None and admitted else None,
            held={name: to_milli(value) for name, value in record.resources.items()} if record and admitted else {},
            admitted_at=(record.admitted_at or "") if record is not None else "",
            workload="Serving",
        ))
    return views


def released_pools(recorded: Iterable[PoolAdmission], wanted: Iterable[PoolKey]) -> list[PoolKey]:
    """Pools admitted before and no longer wanted (their last adapter left): their Deployments go to 0
    replicas, so a pool that holds no quota holds no GPUs either; the next adapter scales it up again
    once the queue admits it."""
    keep = set(wanted)
    return sorted((a.namespace, a.name) for a in recorded if a.admitted and (a.namespace, a.name) not in keep)


def admitted_flavor(queue: Mapping[str, Any] | None, flavor: str | None) -> Flavor | None:
    """The flavor `flavor` of a FineTuneQueue object (dict), or None when either is unknown."""
    if not queue or not flavor:
        return None
    flavors = (queue.get("spec") or {}).get("flavors") or []
    return next((Flavor.model_validate(f) for f in flavors if f.get("name") == flavor), None)


def _timestamp(value: str | None) -> float:
    """Seconds since the epoch; 0 when the object has no creation time yet."""
    parsed = parse_time(value)
    return parsed.timestamp() if parsed is not None else 0.0

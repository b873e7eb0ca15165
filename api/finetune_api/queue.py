"""The FineTuneQueue API: cluster-wide quota, priorities and admission order (DESIGN.md §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import API_VERSION, ApiModel, Condition, LabelSelector, StatusModel, Toleration, cel, quantity_field
from .job import NAME_PATTERN, ObjectMeta


class ResourceQuota(ApiModel):
    """Quota of one resource in one flavor."""

    name: str = Field(max_length=253)
    """Resource name: `nvidia.com/gpu`, `cpu`, `memory`, …"""
    nominal: str = quantity_field()
    """How much of it admitted jobs may hold at once."""


class Flavor(ApiModel):
    """A kind of node with its own quota; admitted pods get its labels and tolerations."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Flavor name, shown in the admitted job's status."""
    node_labels: dict[str, str] | None = None
    """Injected into the node selector of admitted training pods."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Added to admitted training pods."""
    resources: list[ResourceQuota] = Field(min_length=1, max_length=16)
    """Quota per resource in this flavor."""


class PriorityClass(ApiModel):
    """A named priority; higher values are admitted first and may preempt lower ones."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name that jobs refer to."""
    value: int = Field(ge=-1000000, le=1000000)
    """Higher is admitted first."""


class PreemptionSpec(ApiModel):
    """Whether a waiting job may evict running training of lower priority."""

    within_queue: Literal["Never", "LowerPriority"] = "Never"
    """LowerPriority lets a waiting job evict running training of strictly lower priority."""
    grace_period_seconds: int = Field(default=120, ge=0, le=3600)
    """Time the evicted trainer gets to checkpoint after SIGTERM."""


class FineTuneQueueSpec(ApiModel):
    """Quota, order and who may use the queue."""

    flavors: list[Flavor] = Field(min_length=1, max_length=16)
    """Tried in order; a job is admitted into the first flavor with room for its whole gang."""
    namespace_selector: LabelSelector | None = None
    """Namespaces whose jobs may use the queue; unset means all."""
    strategy: Literal["StrictFIFO", "BestEffortFIFO"] = "BestEffortFIFO"
    """StrictFIFO: the head job blocks the ones behind it; BestEffortFIFO: smaller jobs behind it may be
    admitted when the head does not fit."""
    priority_classes: list[PriorityClass] = Field(default_factory=list, max_length=32)
    """Named priorities that jobs choose with spec.queue.priorityClass."""
    default_priority: int = 0
    """Priority of jobs that name no priority class."""
    preemption: PreemptionSpec = Field(default_factory=PreemptionSpec)
    """Whether waiting jobs may evict lower-priority training."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.flavors.all(f, self.flavors.exists_one(g, g.name == f.name))",
                    "flavor names must be unique",
                    ".flavors",
                ),
            ]
        }
    }


class ResourceUsage(StatusModel):
    """Quota held and available per flavor and resource."""

    flavor: str
    resource: str
    used: str
    nominal: str


class PoolAdmission(StatusModel):
    """One adapter pool's admission (embedded mode, the operator's `jobs.adapterPool.queue` names this
    queue): a pool is one consumer, charged once for its replicas, never per adapter job it serves. The
    queue's status is its record (a pool has no object of ours to hold it before its Deployment exists),
    so usage rebuilt after a restart includes it."""

    namespace: str
    name: str
    """The pool (`vllm-<base>-<digest>`), as its Deployment is named."""
    admitted: bool = False
    admitted_at: str | None = None
    flavor: str | None = None
    resources: dict[str, str] = Field(default_factory=dict)
    """Quota held while admitted: the pool's replicas × each replica's requests."""
    position: int | None = None
    message: str = ""


class FineTuneQueueStatus(StatusModel):
    """Observed state of the queue, written by the operator."""

    usage: list[ResourceUsage] = Field(default_factory=list)
    admitted: int = 0
    pending: int = 0
    usage_summary: str = ""
    """Short text for `kubectl get ftq` (e.g. `nvidia.com/gpu 8/16`)."""
    pools: list[PoolAdmission] = Field(default_factory=list)
    """Adapter pools this queue admits or that wait in it (DESIGN.md §6); counted in `usage` and `admitted`."""
    conditions: list[Condition] = Field(default_factory=list)


class FineTuneQueue(ApiModel):
    """A cluster-wide queue that admits FineTuneJobs' training by quota, priority and age."""

    api_version: Literal["finetune.dev/v1alpha1"] = API_VERSION
    kind: Literal["FineTuneQueue"] = "FineTuneQueue"
    metadata: ObjectMeta
    spec: FineTuneQueueSpec
    status: FineTuneQueueStatus | None = None

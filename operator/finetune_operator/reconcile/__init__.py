"""The pure decision core: `decide(job, children, now, settings) -> list[Action]`."""

from .actions import Action, Apply, Create, Delete, DeleteServing, Emit, Observe, PatchStatus, Requeue, writes
from .decide import decide
from .observed import (
    JobState,
    JudgePool,
    NamespaceUsage,
    ObservedChildren,
    PodState,
    ServingState,
    WorkloadState,
    job_state,
    pod_state,
    workload_state,
)

__all__ = [
    "Action", "Apply", "Create", "Delete", "DeleteServing", "Emit", "Observe", "PatchStatus", "Requeue", "writes",
    "decide", "JobState", "JudgePool", "NamespaceUsage", "ObservedChildren", "PodState", "ServingState", "WorkloadState",
    "job_state", "pod_state", "workload_state",
]

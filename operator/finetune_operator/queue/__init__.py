"""Embedded queueing (DESIGN.md §6): a pure admission cycle over FineTuneQueues and FineTuneJobs, and
Kueue-mode helpers. The loop that runs it lives in `finetune_operator.runtime.admission_loop`."""

from .admission import CycleResult, JobDecision, QueueSummary, admission_cycle, apply_decisions
from .requests import format_quantity, job_requests, pod_requests
from .views import FlavorQuota, JobView, QueueView, job_view, queue_view

__all__ = [
    "CycleResult",
    "FlavorQuota",
    "JobDecision",
    "JobView",
    "QueueSummary",
    "QueueView",
    "admission_cycle",
    "apply_decisions",
    "format_quantity",
    "job_requests",
    "job_view",
    "pod_requests",
    "queue_view",
]

"""Kueue mode's labels (DESIGN.md §6): which children Kueue admits, and into which LocalQueue.

Kueue queues a Job or a Deployment that carries `kueue.x-k8s.io/queue-name`, through the integration
its configuration enables for that kind (`batch/job`; `deployment`, whose replicas are admitted one by
one as plain Pods). Only workloads that request accelerators are labelled: a CPU-only evaluation or
serving starts at once, as it does without Kueue.
"""

from __future__ import annotations

from finetune_api import FineTuneJob
from ..settings import OperatorSettings

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_INTEGRATION = "batch/job"
DEPLOYMENT_INTEGRATION = "deployment"


def kueue_labels(job: FineTuneJob, settings: OperatorSettings, integration: str | None = None, gpus: int = 0,
                 queue: str | None = None) -> dict[str, str]:
    """The queue (the job's `spec.queue`, or `queue`) and priority labels of a child in Kueue mode.
    Training (`integration` None) is always queued; evaluation and serving only when they request
    `gpus` accelerators and the cluster's Kueue runs `integration` (`settings.kueue_integrations`)."""
    if settings.queue_mode != "kueue":
        return {}
    if integration is not None and (gpus <= 0 or integration not in settings.kueue_integrations):
        return {}
    labels = {QUEUE_LABEL: queue or job.spec.queue.name}
    if job.spec.queue.priority_class and queue is None:
        labels[PRIORITY_LABEL] = job.spec.queue.priority_class
    return labels

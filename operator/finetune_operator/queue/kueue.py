"""Kueue mode beside the embedded queue: telling when both would manage the same jobs.

In Kueue mode the training Jobs carry `kueue.x-k8s.io/queue-name` (and priority class), are created
suspended (builders/training_job.py), and status.queue mirrors their Workload (reconcile/observed.py).
The embedded queue then stands aside; these checks say so loudly instead of letting two admitters race.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KUEUE_GROUP = "kueue.x-k8s.io"
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"


def embedded_conflicts(queue_mode: str, queue_name: str, jobs_naming_it: int) -> list[str]:
    """Warnings for a FineTuneQueue that jobs still name while the operator is not in embedded mode."""
    if queue_mode == "embedded" or jobs_naming_it == 0:
        return []
    if queue_mode == "kueue":
        return [
            f"FineTuneQueue {queue_name} stands aside: the operator runs in Kueue mode, so Kueue LocalQueue "
            f"{queue_name} in each job's namespace admits its {jobs_naming_it} job(s); delete the FineTuneQueue "
            "or set queueMode embedded"
        ]
    return [f"FineTuneQueue {queue_name} stands aside: queue mode is {queue_mode}, jobs train without admission"]


def workload_conflict(queue_mode: str, workload: Mapping[str, Any], job_key: str) -> str | None:
    """A warning when Kueue created a Workload for a training Job the embedded queue already admits.

    That happens when Kueue's `manageJobsWithoutQueueName` is on: Kueue suspends the Job our queue started,
    and the two admitters would fight over it.
    """
    if queue_mode != "embedded":
        return None
    owners = [o for o in (workload.get("metadata") or {}).get("ownerReferences") or [] if o.get("kind") == "Job"]
    if not owners:
        return None
    name = (workload.get("metadata") or {}).get("name", "")
    return (
        f"Kueue Workload {name} manages training Job {owners[0].get('name')} of {job_key}, which the embedded "
        "FineTuneQueue admits: both would manage this job. Set the operator's queueMode to kueue, or turn off "
        "Kueue's manageJobsWithoutQueueName for this namespace"
    )


def is_kueue_managed(child: Mapping[str, Any]) -> bool:
    """True when a child object carries Kueue's queue label (Kueue, not our queue, admits it)."""
    return QUEUE_NAME_LABEL in ((child.get("metadata") or {}).get("labels") or {})

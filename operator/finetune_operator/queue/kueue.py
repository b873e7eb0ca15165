"""Kueue mode beside the embedded queue: telling when FineTuneQueues stand aside.

In Kueue mode the training Jobs carry `kueue.x-k8s.io/queue-name` (and priority class), are created
suspended (builders/training_job.py), and status.queue mirrors their Workload (reconcile/observed.py).
The embedded queue then stands aside; `embedded_conflicts` says so loudly instead of staying silent.
"""

from __future__ import annotations


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

"""How long each waiting phase may last (DESIGN.md §9 "Deadlines"): the job's `spec.deadlines` first,
then the operator's settings. Pure: the training Job builder and `reconcile.decide` both read it.
"""

from __future__ import annotations

import datetime as dt
import math

from finetune_api import FineTuneJob

from .settings import OperatorSettings

PHASE_DEADLINE_FIELDS = {
    "Validating": ("validating_seconds", "validating_deadline_seconds"),
    "Evaluating": ("evaluating_seconds", "evaluating_deadline_seconds"),
    "Uploading": ("uploading_seconds", "uploading_deadline_seconds"),
    "Deploying": ("deploying_seconds", "deploying_deadline_seconds"),
}
"""Phases whose deadline the operator watches itself (Training's is the Job's `activeDeadlineSeconds`)."""


def phase_deadline_seconds(job: FineTuneJob, phase: str, settings: OperatorSettings) -> int | None:
    """The deadline of `phase` in seconds from its start, or None for phases the operator does not time."""
    fields = PHASE_DEADLINE_FIELDS.get(phase)
    if fields is None:
        return None
    own = getattr(job.spec.deadlines, fields[0])
    return own if own is not None else getattr(settings, fields[1])


def deadline_remaining_seconds(job: FineTuneJob, now: dt.datetime, settings: OperatorSettings) -> float | None:
    """Seconds left before the current phase's deadline (negative: past it); None when it has none.

    The handler reconciles the job again when it runs out, so a phase that nothing changes (a pod stuck
    pulling its image sends no further events) still ends."""
    status = job.status
    if status is None or not status.phase_started_at:
        return None
    deadline = phase_deadline_seconds(job, status.phase, settings)
    if deadline is None:
        return None
    started = dt.datetime.fromisoformat(status.phase_started_at.replace("Z", "+00:00"))
    return (started - now).total_seconds() + deadline


def training_deadline_seconds(job: FineTuneJob, settings: OperatorSettings) -> int:
    """`activeDeadlineSeconds` of a training attempt: the spec's, else an estimate of the run with a
    margin (data tokens × epochs at a deliberately low throughput), never below the floor; without a
    token count (no data report yet) the operator's default."""
    own = job.spec.deadlines.training_seconds
    if own is not None:
        return own
    data = job.status.data if job.status else None
    tokens = data.train_tokens if data else 0
    if not tokens:
        return settings.training_deadline_seconds
    res = job.spec.resources
    gpus = max(res.nodes * res.gpus_per_node, 1)
    seconds = tokens * job.spec.hyperparameters.epochs / (settings.training_tokens_per_gpu_second * gpus)
    return max(settings.training_deadline_floor_seconds, math.ceil(seconds * settings.training_deadline_margin))

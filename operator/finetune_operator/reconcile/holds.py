"""The job's hold on the source cache, from the cluster's side (DESIGN.md §9 Sources): pure, like `decide`.

The fetch step writes `holders/<ns>.<job>.json` on the artifacts claim and eviction skips what it lists.
The operator cannot remove that file itself (it does not mount the claim), so finalizer
`finetune.dev/source-cache-hold` says "this job may hold cache entries": it is added before the first
pod that could write the hold, and removed only once Job `<job>-release` has dropped it: when the job
has Failed (nothing of it reads its sources again) or is being deleted. A job that is Succeeded or
Rejected keeps its hold: a spec change may evaluate or serve it again, from the cached base. A release
that fails, or that has not finished `RELEASE_DEADLINE_SECONDS` after the deletion began, never blocks
the deletion: the finalizer goes, a Warning Event says which hold was left, and its entries stay until
that file is removed.
"""

from __future__ import annotations

import datetime as dt

from finetune_api import FineTuneJob
from finetune_api.contract.sources import cache_holder

from ..builders.names import release_job_name
from ..builders.release_job import RELEASE_DEADLINE_SECONDS, holds_cache
from .actions import Action, Create, Emit, Requeue, SetFinalizer
from .observed import ObservedChildren, parse_time

CACHE_HOLD_FINALIZER = "finetune.dev/source-cache-hold"
RELEASED_PHASES = ("Failed",)
"""Phases after which no pod of the job reads its sources again (a Failed job is never resumed)."""


def cache_hold(job: FineTuneJob, children: ObservedChildren, now: dt.datetime) -> list[Action]:
    """Take the hold's finalizer before any pod runs; release when the job failed or is being deleted."""
    meta = job.metadata
    held = CACHE_HOLD_FINALIZER in (meta.finalizers or [])
    deleted_at = parse_time(meta.deletion_timestamp)
    phase = job.status.phase if job.status else "Pending"
    if deleted_at is None and phase not in RELEASED_PHASES:
        return [SetFinalizer(CACHE_HOLD_FINALIZER, True)] if holds_cache(job) and not held else []
    release = children.jobs.get(release_job_name(meta.name))
    if not held:
        # A job that failed before this finalizer existed (an older operator) is released all the same.
        return [Create("release")] if deleted_at is None and release is None and holds_cache(job) else []
    left = f"cache hold {cache_holder(meta.namespace or '', meta.name)} was not released"
    if release is not None and release.outcome == "succeeded":
        return [SetFinalizer(CACHE_HOLD_FINALIZER, False)]
    if release is not None and release.outcome == "failed":
        why = release.failure_text()
        return [_left(f"{left}: {why}"), SetFinalizer(CACHE_HOLD_FINALIZER, False)]
    if deleted_at is None:
        return [] if release is not None else [Create("release")]
    remaining = (deleted_at + dt.timedelta(seconds=RELEASE_DEADLINE_SECONDS) - now).total_seconds()
    if remaining <= 0:
        return [_left(f"{left} within {RELEASE_DEADLINE_SECONDS}s of the deletion"), SetFinalizer(CACHE_HOLD_FINALIZER, False)]
    return [*([] if release is not None else [Create("release")]), Requeue(remaining + 1)]


def _left(message: str) -> Emit:
    return Emit("Warning", "CacheHoldLeft",
                f"{message}; its cache entries are never evicted until the hold file is removed from the "
                "artifacts claim's .source-cache/holders/")

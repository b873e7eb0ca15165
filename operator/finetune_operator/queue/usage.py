"""Quota in use, rebuilt from the jobs' own status: the operator keeps no other record, so a restarted
operator sees exactly what its predecessor admitted and never admits twice."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .views import Amounts, JobView


def add(into: Amounts, amounts: Amounts, sign: int = 1) -> None:
    """Add (or with sign -1, subtract) `amounts` into `into`, in place."""
    for name, value in amounts.items():
        into[name] = into.get(name, 0) + sign * value


def rebuild_usage(jobs: Iterable[JobView]) -> dict[str, dict[str, Amounts]]:
    """Queue → flavor → resource → amount held by jobs that hold quota (admitted, Queued or Training)."""
    usage: dict[str, dict[str, Amounts]] = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        if job.holds_quota and job.flavor:
            add(usage[job.queue][job.flavor], job.holding)
    return {queue: dict(flavors) for queue, flavors in usage.items()}

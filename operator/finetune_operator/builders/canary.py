"""A canary's routing (DESIGN.md §5.4): the tuned arm's weight now, and the share of requests it really gets.

Separate from `serving` because `reconcile.decide` reads it to state the share in the status."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from finetune_api import FineTuneJob

from ..settings import OperatorSettings


def canary_split(replicas: int, weight: int) -> tuple[int, int]:
    """(tuned, base) replicas for a canary of `weight` percent over `replicas` in all.

    Half rounds up; a split canary keeps at least one replica on each arm (so a total of 1 becomes
    1 + 1). Weight 10 over 10 replicas is 1 tuned and 9 base; 10% over 3 replicas is 1 and 2 (33%).
    """
    if replicas == 0:
        return 0, 0
    if weight <= 0:
        return 0, replicas
    if weight >= 100:
        return replicas, 0
    total = max(replicas, 2)
    tuned = min(max(math.floor(total * weight / 100 + 0.5), 1), total - 1)
    return tuned, total - tuned


@dataclass(frozen=True)
class CanaryRoute:
    """How a canary routes now: the weight asked for, and the share the tuned arm really receives."""

    split: Literal["HTTPRoute", "Replicas"]
    weight: int
    """Percent asked for: the spec's while analysing, 100 once promoted, 0 once rolled back."""
    tuned_replicas: int
    base_replicas: int

    @property
    def share(self) -> int:
        """Percent of requests to the tuned arm: the route's weight, or without Gateway API the replica
        ratio behind the stable Service (kube-proxy spreads connections evenly over ready endpoints)."""
        if self.split == "HTTPRoute":
            return self.weight
        total = self.tuned_replicas + self.base_replicas
        return round(100 * self.tuned_replicas / total) if total else 0


def canary_weight(job: FineTuneJob) -> int:
    """The tuned arm's weight now: the canary status of this generation decides once it has a verdict."""
    serving = job.spec.serving
    assert serving.canary is not None
    canary = job.status.serving.canary if job.status and job.status.serving else None
    if canary is not None and canary.generation == (job.metadata.generation or 1):
        if canary.state == "Promoted":
            return 100
        if canary.state == "RolledBack":
            return 0
    return serving.canary.weight


def canary_route(job: FineTuneJob, settings: OperatorSettings) -> CanaryRoute:
    weight = canary_weight(job)
    tuned, base = canary_split(job.spec.serving.replicas, weight)
    return CanaryRoute("HTTPRoute" if settings.gateway_api else "Replicas", weight, tuned, base)

"""What a reconcile decides to do. Plain values: the handler carries them out in order, tests read them.

Creations name a child *kind* (the handler renders it with `finetune_operator.builders`), so the
decisions stay free of manifest details and the builders free of decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Child = Literal["config", "prepare", "train-service", "train", "eval", "upload", "release", "serving", "shadow"]


@dataclass(frozen=True)
class Create:
    """Create a child (409 = it exists = success). `attempt` is the training attempt for `train`."""

    child: Child
    attempt: int | None = None
    judge_url: str | None = None
    """For `eval`: the adapter pool replica that pool-judged `score_model` graders ask (observed)."""


@dataclass(frozen=True)
class Apply:
    """Create or update children to the current spec (`config` after a spec change, `serving` re-deploy)."""

    child: Child


@dataclass(frozen=True)
class Delete:
    """Delete a child object by kind and name (children of children go with it)."""

    kind: str
    name: str
    propagation: Literal["Foreground", "Background"] = "Background"
    grace_period_seconds: int | None = None


@dataclass(frozen=True)
class DeleteServing:
    """Remove the job's serving objects (serving disabled by a spec change)."""


@dataclass(frozen=True)
class SetFinalizer:
    """Add (`present`) or remove one of our finalizers on the FineTuneJob."""

    name: str
    present: bool


@dataclass(frozen=True)
class PatchStatus:
    """One merge patch of `.status` per transition (dicts merge; lists such as conditions are replaced)."""

    patch: dict[str, Any]


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the FineTuneJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Requeue:
    """Reconcile again after this many seconds even if nothing changes (backoff, progress, readiness)."""

    after: float


@dataclass(frozen=True)
class Observe:
    """A metric sample that belongs to a transition (see `metrics.record`)."""

    metric: Literal["phase_seconds", "queue_wait_seconds", "retry", "gpu_hours", "reconcile_error"]
    value: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)


Action = Create | Apply | Delete | DeleteServing | SetFinalizer | PatchStatus | Emit | Requeue | Observe


def writes(actions: list[Action]) -> list[Action]:
    """The actions that change something in the cluster (idempotency tests assert there are none)."""
    return [a for a in actions if not isinstance(a, (Requeue, Observe))]

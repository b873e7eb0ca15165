"""Why a reconcile failed, and whether trying again can help (DESIGN.md §9 "Failure classes").

A reconcile that raises is classified by `classify` — the one place that decides: transient errors
(the API server overloaded or restarting, a rate limit, a timeout, a connection drop) are retried with
backoff for as long as they last; everything else (a builder error, a 4xx other than 409/429, a foreign
object holding a child's name) is permanent and fails the job after a bounded number of attempts.

`ownership` decides what a 409 on create means: the object is ours (proceed), a previous job of the same
name's that the garbage collector has not removed yet (transient: wait), or somebody else's (permanent).
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import Any, Literal

from ..builders.common import LABEL_POOL

ErrorClass = Literal["transient", "permanent"]
Ownership = Literal["ours", "previous", "foreign"]

TRANSIENT_STATUS = frozenset({0, 408, 409, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: no answer (0), timeouts, rate limits, server-side errors, and a 409
that escapes the create path (an update conflict: the next reconcile reads the object again)."""


class ForeignObject(RuntimeError):
    """A child's name is held by an object this job does not own (the operator never takes it over)."""


class NotYetCollected(RuntimeError):
    """A child's name is held by the previous job of the same name's object, still being deleted."""


@dataclass(frozen=True)
class ReconcileFailure:
    """A classified reconcile error: what the user reads in the condition, Event and `Failed` message."""

    error_class: ErrorClass
    reason: str
    message: str


def classify(error: BaseException) -> ReconcileFailure:
    """Transient or permanent, and a one-line message (no traceback, no response body beyond 300 chars)."""
    status = getattr(error, "status", None)
    if isinstance(error, NotYetCollected):
        return ReconcileFailure("transient", "WaitingForGarbageCollection", str(error))
    if isinstance(error, ForeignObject):
        return ReconcileFailure("permanent", "ForeignObject", str(error))
    if isinstance(status, int):
        return ReconcileFailure("transient" if status in TRANSIENT_STATUS else "permanent", "ApiError",
                                _one_line(f"API error {error}"))
    unreachable = (TimeoutError, ConnectionError, socket.timeout, http.client.HTTPException)
    if isinstance(error, unreachable) or type(error).__module__.startswith("urllib3"):
        return ReconcileFailure("transient", "ApiUnreachable", _one_line(f"API unreachable: {type(error).__name__}: {error}"))
    if isinstance(error, PermissionError):
        return ReconcileFailure("permanent", "NotPermitted", _one_line(str(error)))
    return ReconcileFailure("permanent", "ReconcileError", _one_line(f"{type(error).__name__}: {error}"))


def ownership(existing: dict[str, Any], wanted: dict[str, Any]) -> tuple[Ownership, str]:
    """Who holds the name `wanted` asked for, and a sentence naming the object for the user.

    A child with a controller reference is ours only with the same controller uid. The adapter pool
    (`vllm-<model.name>`, shared by the adapter jobs on one base: non-controller owner references only)
    is ours when it is a pool of that name and no one controls it.
    """
    meta, want = existing.get("metadata") or {}, wanted.get("metadata") or {}
    what = f"{wanted.get('kind')} {want.get('namespace') or meta.get('namespace')}/{want.get('name')}"
    owners = meta.get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), None)
    wanted_controller = next((o for o in want.get("ownerReferences") or [] if o.get("controller")), None)
    if wanted_controller is None:
        pool = (want.get("labels") or {}).get(LABEL_POOL)
        if pool and (meta.get("labels") or {}).get(LABEL_POOL) == pool and controller is None:
            return "ours", f"{what} is the shared adapter pool"
    elif controller is not None and controller.get("uid") == wanted_controller.get("uid"):
        return "ours", f"{what} is owned by this job"
    if meta.get("deletionTimestamp"):
        return "previous", f"{what} is being deleted; waiting for it to go before creating it again"
    if wanted_controller is not None and controller is not None and (
            controller.get("kind"), controller.get("name")) == (wanted_controller.get("kind"), wanted_controller.get("name")):
        return "previous", (f"{what} belongs to a deleted {controller.get('kind')} of the same name "
                            f"(uid {controller.get('uid')}); waiting for the garbage collector")
    holder = f"{controller.get('kind')} {controller.get('name')} (uid {controller.get('uid')})" if controller else "nobody"
    return "foreign", (f"{what} already exists and is not this job's (controlled by {holder}); "
                       "delete or rename it, or rename the job")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

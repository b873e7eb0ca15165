"""Writes this process made that the watches have not shown yet.

The job controller's creations: the reconcile after a create may run before the child's watch event
arrives; without this it would create again (409, harmless but a wasted request per child and reconcile).
The admission loop's `status.queue` patches: see `WrittenQueueStatus`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

CREATE_EXPECTATION_SECONDS = 30.0
"""A child this process created is not created again for this long: the watch has to catch up first."""
PRUNE_ABOVE = 10000

Ident = tuple[str, str, str, str]
"""(kind, namespace, name, controller uid): a job re-created under the same name is another owner."""


class CreateExpectations:
    """When this process last created each object."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._created: dict[Ident, float] = {}

    def pending(self, ident: Ident) -> bool:
        """Created moments ago: its watch event may still be on the way."""
        return self.clock() - self._created.get(ident, -1e9) < CREATE_EXPECTATION_SECONDS

    def deleted(self, ident: Ident) -> None:
        """Deleted by this process: a create of the same object that follows (a re-evaluation's new
        evaluation Job, moments after the first) must not be skipped as already on its way."""
        self._created.pop(ident, None)

    def created(self, ident: Ident) -> None:
        now = self.clock()
        self._created[ident] = now
        if len(self._created) > PRUNE_ABOVE:
            horizon = now - CREATE_EXPECTATION_SECONDS
            self._created = {k: t for k, t in self._created.items() if t >= horizon}


class WrittenQueueStatus:
    """The embedded queue's own `status.queue` writes, until the watch shows them.

    A cycle that read the job as the index still shows it would count quota twice or miss it; so until
    the job's resourceVersion moves past the one our patch was made against, the cycle reads the job as
    we patched it. Used from the cycle's thread, hence the lock."""

    def __init__(self) -> None:
        self._written: dict[str, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def wrote(self, key: str, resource_version: str, queue_status: dict[str, Any]) -> None:
        """`queue_status` (whole) was stored by a patch made against `resource_version` of job `key`."""
        with self._lock:
            self._written[key] = (resource_version, queue_status)

    def view(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        """The job snapshot, with our write on top while the index has not caught up with it."""
        meta = snapshot["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        with self._lock:
            entry = self._written.get(key)
            if entry is None:
                return dict(snapshot)
            if entry[0] != meta.get("resourceVersion"):
                del self._written[key]
                return dict(snapshot)
        status = dict(snapshot["status"])
        status["queue"] = dict(entry[1])
        return {**snapshot, "status": status}

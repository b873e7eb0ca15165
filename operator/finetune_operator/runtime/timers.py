"""Reconcile again later: `Requeue` actions (retry backoff, progress refresh, readiness polling) and the
backoff after a failed reconcile. One pending timer per key; the earliest request wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

ERROR_BACKOFF_MAX = 60.0


class Timers:
    """Calls `fire(key)` once per key at the earliest time requested."""

    def __init__(self, fire: Callable[[Hashable], Awaitable[None]]) -> None:
        self.fire = fire
        self._pending: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}

    def request(self, key: Hashable, after: float) -> None:
        """Fire for `key` in `after` seconds, unless an earlier timer is already set."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(after, 0.0)
        current = self._pending.get(key)
        if current and current[0] <= when and not current[1].cancelled():
            return
        if current:
            current[1].cancel()
        handle = loop.call_at(when, lambda: asyncio.ensure_future(self._fired(key)))
        self._pending[key] = (when, handle)

    async def _fired(self, key: Hashable) -> None:
        self._pending.pop(key, None)
        await self.fire(key)

    def forget(self, key: Hashable) -> None:
        timer = self._pending.pop(key, None)
        if timer:
            timer[1].cancel()


class Backoff:
    """Failed reconciles per key: 2, 4, 8 ... seconds up to ERROR_BACKOFF_MAX; a success resets it."""

    def __init__(self) -> None:
        self._failures: dict[Hashable, int] = {}

    def failed(self, key: Hashable) -> float:
        """Count a failure; the delay before the next try."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return min(2.0 ** failures, ERROR_BACKOFF_MAX)

    def failures(self, key: Hashable) -> int:
        """Failed reconciles of `key` in a row (the permanent-error budget counts them)."""
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

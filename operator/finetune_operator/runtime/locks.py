"""One reconcile at a time per job: events, timers and retries of one job queue up behind its lock."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class KeyedLocks:
    """An asyncio lock per key, made on first use and dropped with the key."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def __call__(self, key: Hashable) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Hashable) -> None:
        self._locks.pop(key, None)

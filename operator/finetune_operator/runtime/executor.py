"""Blocking API calls off the event loop: the `kubernetes` client is synchronous, Kopf is asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

WORKERS = 16
"""Concurrent API calls (Kopf's own `execution.max_workers` is set to match)."""


class Executor:
    """A thread pool of its own, so API calls never wait behind Kopf's sync handlers."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="k8s")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

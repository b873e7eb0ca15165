"""The embedded queue's admission loop (`runtime.admission_loop`), started and stopped with the operator.

Runs alone too (`kopf run -m finetune_operator.handlers.queue`, as tests/api/test_queue_admission.py does)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from ..runtime import context
from ..runtime.admission_loop import AdmissionLoop
from ..runtime.indexes import Indexes
from . import indexes  # noqa: F401  (registers the indexes the loop reads)


@kopf.on.startup()
async def start_admission_loop(memo: kopf.Memo, **kwargs: Any) -> None:
    """Start the loop; it reads the live indexes, so it sees every later change."""
    ctx = context.of(memo, Indexes.from_kwargs(kwargs))
    loop = AdmissionLoop(ctx.k8s, ctx.settings, ctx.executor, ctx.indexes)
    memo["admission_loop"] = asyncio.create_task(loop.run())


@kopf.on.cleanup()
async def stop_admission_loop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("admission_loop")
    if task is not None:
        task.cancel()

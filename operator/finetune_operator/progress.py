"""Training progress from the rank-0 trainer's log: the contract's progress events, as `status.progress`.

The operator reads the rank-0 pod's log tail every `progress_interval_seconds` (pods/log `get`), so
training pods need no API rights at all: other log lines, partial lines and garbage are skipped.
"""

from __future__ import annotations

from finetune_api.contract.progress import ProgressEvent, latest_progress as latest_event
from finetune_api.job import Progress

TAIL_LINES = 50


def latest_progress(log_tail: str) -> ProgressEvent | None:
    """The latest progress in a log tail, with the last training and validation losses in it."""
    return latest_event(log_tail.splitlines())


def progress_status(event: ProgressEvent, now: str) -> Progress:
    """`status.progress` for one progress event (`summary` is what `kubectl get` shows)."""
    percent = int(100 * event.step / event.total_steps) if event.total_steps else 0
    return Progress(
        step=event.step,
        total_steps=event.total_steps,
        epoch=event.epoch,
        loss=event.loss,
        eval_loss=event.eval_loss,
        learning_rate=event.learning_rate,
        tokens_per_second=event.tokens_per_second,
        eta_seconds=event.eta_seconds,
        percent=percent,
        summary=progress_summary(f"{event.step}/{event.total_steps}", event.loss, event.eval_loss),
        updated_at=now,
    )


def progress_summary(head: str, loss: float | None, eval_loss: float | None) -> str:
    """`40/100 loss 1.23 val 1.31`: the short text of `status.progress.summary`."""
    parts = [head]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if eval_loss is not None:
        parts.append(f"val {eval_loss:.4g}")
    return " ".join(parts)

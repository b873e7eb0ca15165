"""Training progress from the trainer's stdout: one JSON line per logging step.

`{"event":"progress","step":..,"total":..,"epoch":..,"loss":..,"lr":..,"tokensPerSecond":..,"etaSeconds":..}`

The operator reads the rank-0 pod's log tail every `progress_interval_seconds` (pods/log `get`), so
training pods need no API rights at all: other log lines, partial lines and garbage are skipped.
"""

from __future__ import annotations

import json
import math

from .reconcile.observed import TrainingProgress

TAIL_LINES = 50


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def parse_progress_line(line: str) -> TrainingProgress | None:
    """One progress event, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        # container runtimes may prefix a timestamp; the JSON starts at the first brace
        start = line.find("{")
        if start < 0:
            return None
        line = line[start:]
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != "progress":
        return None
    step, total = _number(event.get("step")), _number(event.get("total"))
    if step is None or total is None:
        return None
    eta = _number(event.get("etaSeconds"))
    return TrainingProgress(
        step=int(step),
        total=int(total),
        epoch=round(_number(event.get("epoch")) or 0.0, 4),
        loss=_number(event.get("loss")),
        learning_rate=_number(event.get("lr")),
        tokens_per_second=_number(event.get("tokensPerSecond")),
        eta_seconds=int(eta) if eta is not None else None,
    )


def latest_progress(log_tail: str) -> TrainingProgress | None:
    """The last progress event in a log tail."""
    for line in reversed(log_tail.splitlines()):
        progress = parse_progress_line(line)
        if progress is not None:
            return progress
    return None

"""The progress event: one JSON line per logging (or evaluation) step of the rank-0 trainer.

The trainer prints it on stdout and appends it to `progress.jsonl`; the operator parses it from the
rank-0 pod's log tail (so training pods need no API rights), `ftctl run` from the process's stdout, and
the local report plots `progress.jsonl`. A training step carries `loss`, an evaluation step `evalLoss`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, ValidationError

from .termination import ContractModel, FiniteFloat

MAX_LINE_BYTES = 4096


class ProgressEvent(ContractModel):
    """Where training stands at one step."""

    event: Literal["progress"] = "progress"
    step: int
    total_steps: int
    epoch: float = 0.0
    loss: FiniteFloat = None
    """Training loss over the last logging interval."""
    eval_loss: FiniteFloat = None
    """Validation loss, on the evaluation steps (every `saveSteps`) and at the end."""
    learning_rate: FiniteFloat = None
    tokens_per_second: FiniteFloat = None
    eta_seconds: int | None = None
    train_tokens: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    """Method-specific figures (grad_norm, rewards/margins, reward, kl, …)."""

    def to_line(self) -> str:
        """One compact JSON line, never over 4 KiB (the extra metrics go first)."""
        text = super().to_line()
        if len(text.encode()) > MAX_LINE_BYTES:
            text = self.model_copy(update={"metrics": {}}).to_line()
        return text

    def updated_by(self, newer: ProgressEvent) -> ProgressEvent:
        """`newer`, keeping the losses it does not carry (a training step has no `evalLoss`, an evaluation no `loss`)."""
        kept = {k: getattr(self, k) for k in ("loss", "eval_loss", "learning_rate", "tokens_per_second")
                if getattr(newer, k) is None}
        return newer.model_copy(update=kept)

    @classmethod
    def parse_line(cls, line: str) -> ProgressEvent | None:
        """The event on one output line; None for any other line (runtimes may prefix a timestamp)."""
        start = line.find("{")
        if start < 0 or '"progress"' not in line:
            return None
        try:
            value = json.loads(line[start:])
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("event") != "progress":
            return None
        try:
            return cls.model_validate(value)
        except ValidationError:
            return None


def read_events(lines: Iterable[str]) -> list[ProgressEvent]:
    """Every progress event among `lines`, in order (other lines, partial lines and garbage skipped)."""
    return [e for line in lines if (e := ProgressEvent.parse_line(line)) is not None]


def latest_progress(lines: Iterable[str]) -> ProgressEvent | None:
    """The latest state: the last event, with the last training and validation losses seen before it."""
    latest: ProgressEvent | None = None
    for event in read_events(lines):
        latest = event if latest is None else latest.updated_by(event)
    return latest

"""Progress lines, our own trained-token count, and checkpoint-then-exit on SIGTERM.

The operator reads one `ProgressEvent` line (finetune_api.contract.progress) per logging and per
evaluation step from stdout (rank 0 only); the same lines go to `progress.jsonl` for `ftctl` and the
report. TRL's token counter restarts at 0 on resume, so we count trained tokens ourselves and keep the
count inside each checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from transformers import TrainerCallback

from finetune_api.contract.progress import ProgressEvent

from .checkpoint import read_state, write_state

_EXTRA_METRICS = ("grad_norm", "rewards/margins", "rewards/accuracies", "reward", "reward_std", "kl")


class TokenCounter:
    """Trained (non-padding) tokens over all processes, continued across resumes."""

    def __init__(self, start: int = 0) -> None:
        self.total = start
        self.session_start = start

    @property
    def session(self) -> int:
        return self.total - self.session_start


def batch_tokens(inputs: dict[str, Any]) -> int:
    """Real tokens of one micro-batch: the attention mask's ones, or every id when padding-free."""
    if "attention_mask" in inputs and isinstance(inputs["attention_mask"], torch.Tensor):
        return int(inputs["attention_mask"].sum())
    if "prompt_mask" in inputs and "completion_mask" in inputs:
        return int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0


class TokenCountingMixin:
    """Mixed into a TRL trainer: adds each training micro-batch's tokens (summed over processes)."""

    token_counter: TokenCounter

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        if model.training:
            local = torch.tensor(batch_tokens(inputs), dtype=torch.long)
            total = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum")  # type: ignore[attr-defined]
            self.token_counter.total += int(total)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]


def with_token_counting(trainer_class: type, counter: TokenCounter) -> type:
    """A subclass of `trainer_class` that counts trained tokens into `counter`."""
    return type(f"Counting{trainer_class.__name__}", (TokenCountingMixin, trainer_class), {"token_counter": counter})


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class ProgressCallback(TrainerCallback):
    """Writes the progress JSON line at every log, and our state into every checkpoint."""

    def __init__(self, counter: TokenCounter, progress_log: str | Path | None, stream: TextIO | None = None) -> None:
        self.counter = counter
        self.progress_log = Path(progress_log) if progress_log else None
        self.stream = stream
        self._started = time.monotonic()
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._started = time.monotonic()
        self._start_step = state.global_step
        self.counter.session_start = self.counter.total

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        """A training log (`loss`) or an evaluation (`eval_loss`, every `saveSteps`) becomes one event."""
        if not state.is_world_process_zero or not logs or ("loss" not in logs and "eval_loss" not in logs):
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done = state.global_step - self._start_step
        remaining = max(state.max_steps - state.global_step, 0)
        self.emit(ProgressEvent(
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(float(state.epoch or 0.0), 4),
            loss=_finite(logs.get("loss")),
            eval_loss=_finite(logs.get("eval_loss")),
            learning_rate=_finite(logs.get("learning_rate")),
            tokens_per_second=round(self.counter.session / elapsed, 2),
            eta_seconds=int(remaining * elapsed / done) if done > 0 else None,
            train_tokens=self.counter.total,
            metrics={k: v for k in _EXTRA_METRICS if (v := _finite(logs.get(k))) is not None},
        ))

    def emit(self, event: ProgressEvent) -> None:
        line = event.to_line()
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()
        if self.progress_log is not None:
            self.progress_log.parent.mkdir(parents=True, exist_ok=True)
            with self.progress_log.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                write_state(checkpoint, {"trainedTokens": self.counter.total, "step": state.global_step})


def resumed_token_count(checkpoint: str | Path | None) -> int:
    """Trained tokens recorded in the checkpoint we resume from (0 for a fresh run)."""
    return int(read_state(checkpoint).get("trainedTokens", 0))


class StopOnSigterm(TrainerCallback):
    """On SIGTERM (preemption, eviction, scale-down): finish the step, save a checkpoint, stop.

    The flag is all-reduced every step so every process stops at the same step; otherwise one rank
    would enter the save collective while the others train on.
    """

    def __init__(self) -> None:
        self.requested = False
        self.stopped = False

    def install(self) -> StopOnSigterm:
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def _agreed(self) -> bool:
        flag = torch.tensor(1 if self.requested else 0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "nccl":
                flag = flag.cuda()
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if self._agreed():
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True


def tensorboard_callback(log_dir: Path) -> TrainerCallback:
    """The Trainer's own TensorBoard logging (loss, validation loss, learning rate by step) into the
    artifacts; `report_to` stays `none` so no other integration is picked up from what is installed."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))

"""Run trainer phases as child processes, the way pods run them: argv lists, a termination-message
file, JSON progress lines on stdout. Each phase is its own process group with a parent-death signal:
stopping `ftctl` (any signal, even SIGKILL) stops the phase and everything it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.termination import PhaseSummary
from finetune_trainer.failure_reason import is_disk_full, reason_from_log
from finetune_trainer.process_group import stop_process_group, supervised_popen_kwargs

STOP_GRACE_SECONDS = 30.0  # the trainer finishes its step and saves a checkpoint on SIGTERM

Summary = TypeVar("Summary", bound=PhaseSummary)


@dataclass
class PhaseResult:
    """How a phase ended: exit code, its termination message, and the tail of its output."""

    name: str
    returncode: int
    message: str = ""
    """The termination message as the phase wrote it (a `PhaseSummary`)."""
    tail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_path: Path | None = None

    def summary(self, model: type[Summary]) -> Summary | None:
        """The phase's summary as `model`; None when it left none of that shape."""
        return model.parse(self.message)

    @property
    def reason(self) -> str:
        """One line on why the phase failed: its termination message, else the log's last exception."""
        summary = self.summary(PhaseSummary)
        if summary is not None and not summary.ok and summary.message and summary.message.strip():
            return " ".join(summary.message.split())[:300]
        return reason_from_log(self.tail) or f"exit {self.returncode}"

    @property
    def disk_full(self) -> bool:
        """The phase ran out of space (ENOSPC in its message or output): retrying will not help."""
        return self.returncode != 0 and is_disk_full("\n".join([self.message, *self.tail]))


def phase_env(workdir: Path, termination_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a local phase: offline hub, one thread per process, CPU DeepSpeed, writable caches."""
    env = dict(os.environ)
    cache = Path(os.environ.get("FT_CACHE_DIR", Path.cwd() / ".cache")).resolve()
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "TORCH_EXTENSIONS_DIR": env.get("TORCH_EXTENSIONS_DIR", str(cache / "torch_extensions")),
            "HF_HOME": env.get("HF_HOME", str(cache / "hf")),
            "FT_TERMINATION_LOG": str(termination_file),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    bin_dir = str(Path(sys.executable).parent)
    if not env.get("PATH", "").startswith(bin_dir):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if extra:
        env.update(extra)
    return env


def phase_log(workdir: Path, name: str) -> Path:
    """Where a phase's output goes (appended to by every run of the phase)."""
    return workdir / "logs" / f"{name}.log"


def run_phase_process(
    name: str,
    argv: list[str],
    workdir: Path,
    on_event: Callable[[ProgressEvent], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> PhaseResult:
    """Run one phase to completion; progress lines go to `on_event`, all output to a log."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    termination = workdir / "termination" / f"{name}.json"
    termination.parent.mkdir(parents=True, exist_ok=True)
    termination.unlink(missing_ok=True)
    log_path = phase_log(workdir, name)
    tail: deque[str] = deque(maxlen=200)
    started = time.monotonic()
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=phase_env(workdir, termination, extra_env),
            **supervised_popen_kwargs(),
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                stripped = line.strip()
                tail.append(line.rstrip())
                if on_event is not None and (event := ProgressEvent.parse_line(stripped)) is not None:
                    on_event(event)
            proc.wait()
            stop_process_group(proc)  # anything the phase left behind in its group
        except BaseException:
            stop_process_group(proc, STOP_GRACE_SECONDS)
            raise
    message = termination.read_text(errors="replace") if termination.exists() else ""
    return PhaseResult(name, proc.returncode, message, list(tail), time.monotonic() - started, log_path)

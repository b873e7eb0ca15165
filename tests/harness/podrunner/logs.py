"""What a container leaves behind: its log file (stdout and stderr of every run, appended) with the byte
offset where each run starts (so the current and the previous run can be served apart, as the kubelet's
`previous=true` does), and its termination message."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from .container import Container

TERMINATION_MESSAGE_LIMIT = 4096


def run_starts_path(log_path: Path) -> Path:
    """Where a container's run start offsets live: one decimal byte offset per line, oldest first."""
    return log_path.with_name(log_path.name + ".starts")


def open_run_log(c: Container) -> BinaryIO:
    """Open the container's log for a new run (appending), recording where this run's output starts."""
    assert c.log_path is not None
    with open(run_starts_path(c.log_path), "a") as starts:
        starts.write(f"{c.log_path.stat().st_size if c.log_path.exists() else 0}\n")
    return open(c.log_path, "ab")  # noqa: SIM115 - the caller's `with` closes it


def run_offsets(log_path: Path) -> list[int]:
    """The byte offsets where each run of the container starts in its log (empty before the first run)."""
    try:
        text = run_starts_path(log_path).read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


def log_tail(c: Container, lines: int, limit: int) -> str:
    if not c.log_path or not c.log_path.exists():
        return ""
    data = c.log_path.read_bytes()[-64 * 1024:].decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])[-limit:]


def termination_message(c: Container, exit_code: int) -> str:
    """The file at terminationMessagePath; the log's tail for a failure under FallbackToLogsOnError."""
    message = ""
    if c.term_host and c.term_host.exists():
        message = c.term_host.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", "replace")
    if not message and exit_code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        message = log_tail(c, 80, 2048)
    return message

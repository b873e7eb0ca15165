"""What a container leaves behind: its log file (stdout and stderr) and its termination message."""

from __future__ import annotations

from .container import Container

TERMINATION_MESSAGE_LIMIT = 4096


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

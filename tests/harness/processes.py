"""What a process left behind, read from /proc: its descendants, and every process carrying a marker
in its environment (which survives re-parenting to init, where a walk from the parent would miss it)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

MARKER_ENV = "FT_TEST_PROCESS_MARKER"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live process below `root` (children, their children, …)."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


def marked(marker: str) -> set[int]:
    """Live processes whose environment holds MARKER_ENV=`marker`."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = set()
    for pid in pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(pid):
            found.add(pid)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def wait_until_gone(pids_: set[int], marker: str | None = None, timeout: float = 60.0) -> set[int]:
    """Wait for `pids_` (and every process marked with `marker`) to exit; the ones still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids_ if alive(p)} | (marked(marker) if marker else set())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def kill_all(pids_: set[int]) -> None:
    """Test clean-up after a failed assertion: nothing we started may outlive the test."""
    for pid in pids_:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def port_free(port: int) -> bool:
    """A server could listen on `port` again (SO_REUSEADDR, as servers bind: TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0

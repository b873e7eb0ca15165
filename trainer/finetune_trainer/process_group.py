"""Child processes that cannot outlive their starter (DESIGN.md §7, process supervision).

Every long-lived child (a phase, a vLLM server, a grader worker) starts in its own process group, so
one `killpg` stops it and whatever it started in that group, and with a parent-death signal
(`prctl(PR_SET_PDEATHSIG)`), so it is told to stop even when its parent is killed with SIGKILL and
has no chance to clean up. The death signal is SIGTERM: the child shuts down its own children
(vLLM its engine, torchrun its workers, the trainer checkpoints) instead of orphaning them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from typing import Any

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: dlopen in a forked child can deadlock


def die_with_parent(parent_pid: int | None = None, signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies.

    Called in the child (a `preexec_fn`, or first thing in a launched worker). The signal follows the
    parent *thread* that forked: start children from a long-lived thread. If the parent is already
    gone (`parent_pid` no longer our parent), stop at once.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def supervised_popen_kwargs(own_group: bool = True) -> dict[str, Any]:
    """`subprocess.Popen` keyword arguments for a child that stops with its starter: the parent-death
    signal and, with `own_group`, its own process group (session) for `stop_process_group`."""
    parent = os.getpid()
    return {"start_new_session": own_group, "preexec_fn": lambda: die_with_parent(parent)}


def stop_process_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the child's process group (the trainer checkpoints), then SIGKILL after `grace`.

    A second interruption while waiting (another Ctrl-C) kills the group at once, then propagates.
    """
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # the leader is gone; leftovers in its group are not wanted
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except BaseException:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """The user (or `timeout`, systemd, a CI runner) asked us to stop with `signum`. A KeyboardInterrupt,
    so every `finally`/`with` on the way out stops its children the same way for all three signals."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report it: 130 SIGINT, 143 SIGTERM, 129 SIGHUP."""
        return 128 + self.signum


def _raise_stop(signum: int, frame: Any) -> None:
    raise StopRequested(signum)


def raise_on_stop_signals() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into `StopRequested` in the main thread (a command's entry point)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)

"""One run per work directory: an exclusive `flock` on `<workdir>/.lock`, holding the owner's pid.

The kernel drops the lock when its holder exits, however it exits (even SIGKILL), so a stale lock
file never blocks the next run; the pid inside is only there to tell the user who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


class WorkdirBusy(Exception):
    """Another process holds the work directory."""

    def __init__(self, workdir: Path, holder: str) -> None:
        super().__init__(f"{workdir} is in use by another ftctl run (pid {holder}); wait for it or pass another --workdir")
        self.workdir, self.holder = workdir, holder


class WorkdirLock:
    """`with WorkdirLock(workdir):` — raises WorkdirBusy (naming the holder's pid) when taken."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirBusy(self.workdir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a waiter)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

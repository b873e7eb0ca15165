"""One run per work directory; the lock names its holder and dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_cli.local.lock import WorkdirBusy, WorkdirLock

pytestmark = pytest.mark.unit
HOLD = "import sys, time; from pathlib import Path; from finetune_cli.local.lock import WorkdirLock; " \
       "WorkdirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)"


def test_a_held_workdir_is_refused_with_the_holders_pid_until_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=rf"{tmp_path} is in use by another ftctl run \(pid {holder.pid}\)"):
            WorkdirLock(tmp_path).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with WorkdirLock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_the_lock_is_not_inherited_by_children(tmp_path: Path) -> None:
    with WorkdirLock(tmp_path):
        child = subprocess.Popen(["sleep", "30"])
    try:
        WorkdirLock(tmp_path).acquire().release()  # the child (a server left behind) does not hold it
    finally:
        child.kill()
        child.wait()

"""Children started the supervised way cannot outlive their starter, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from finetune_trainer.process_group import StopRequested, stop_process_group, supervised_popen_kwargs

from tests.harness.processes import alive

pytestmark = pytest.mark.unit

STARTER = """
import subprocess, sys, time
from finetune_trainer.process_group import supervised_popen_kwargs
child = subprocess.Popen(["sleep", "300"], **supervised_popen_kwargs())
print(child.pid, flush=True)
time.sleep(300)
"""


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_child_dies_when_its_starter_is_killed_with_sigkill() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    child = int(starter.stdout.readline())
    try:
        assert alive(child)
        os.kill(starter.pid, signal.SIGKILL)  # no handler, no finally: only the kernel can tell the child
        starter.wait()
        assert wait_dead(child), "the child outlived its SIGKILLed starter"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_stopping_a_group_stops_what_the_child_started() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                            **supervised_popen_kwargs())
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    stop_process_group(proc, grace=5)
    assert proc.returncode is not None
    assert wait_dead(grandchild), "the group's other member survived"


def test_stop_signals_map_to_shell_exit_codes() -> None:
    codes = {s.name: StopRequested(s).exit_code for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert codes == {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
    assert isinstance(StopRequested(signal.SIGTERM), KeyboardInterrupt)

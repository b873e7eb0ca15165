"""The launcher wrapper gives the pod the exit code the operator classifies by (DESIGN.md §4): torchrun
itself exits 1 for any worker failure, which would make a crashed worker look like a user error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_api.contract.launch import free_port, launcher_prefix

pytestmark = [pytest.mark.unit, pytest.mark.slow]

WORKER = """
import os, sys
outcome = sys.argv[1 + int(os.environ["RANK"])]
if outcome == "abort":
    os.abort()
sys.exit(int(outcome))
"""


def launch(tmp_path: Path, rank0: str, rank1: str) -> tuple[int, dict, str]:
    """Two real torchrun workers that end as told; returns (exit code, termination message, stderr)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    message = tmp_path / "termination-log"
    argv = [*launcher_prefix(sys.executable), "torchrun", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), rank0, rank1]
    env = {"PATH": "/usr/bin:/bin", "FT_TERMINATION_LOG": str(message), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(message.read_text()) if message.exists() else {}, done.stderr


def test_workers_that_finish_exit_zero(tmp_path: Path) -> None:
    code, message, stderr = launch(tmp_path, "0", "0")
    assert code == 0, stderr[-3000:]
    assert message == {}


def test_a_crashed_worker_is_an_infrastructure_failure_not_a_user_error(tmp_path: Path) -> None:
    code, message, stderr = launch(tmp_path, "0", "abort")
    assert code == 2, stderr[-3000:]
    assert message["reason"] == "InfrastructureError" and "rank 1 killed by SIGABRT" in message["message"]


def test_a_user_error_in_any_worker_stays_a_user_error(tmp_path: Path) -> None:
    code, _, stderr = launch(tmp_path, "1", "0")
    assert code == 1, stderr[-3000:]


def test_workers_stopped_after_their_checkpoint_exit_143(tmp_path: Path) -> None:
    code, _, stderr = launch(tmp_path, "143", "143")
    assert code == 143, stderr[-3000:]

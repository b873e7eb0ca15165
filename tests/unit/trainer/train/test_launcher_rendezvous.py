"""A rendezvous that fails before any worker starts is an infrastructure error (retried), not a user error:
torchrun itself raises (here: its master port is taken) and would otherwise exit 1."""

from __future__ import annotations

import json
import socket

import pytest

from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR
from finetune_trainer.train import launcher

pytestmark = pytest.mark.unit


def test_a_taken_master_port_is_an_infrastructure_error(tmp_path, monkeypatch) -> None:
    script = tmp_path / "never_runs.py"
    script.write_text("raise SystemExit('a worker started')\n")
    message = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(message))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = launcher.main(["torchrun", "--nnodes", "1", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                              "--master_port", str(port), str(script)])
    assert code == INFRASTRUCTURE_ERROR
    summary = json.loads(message.read_text())
    assert summary["reason"] == "InfrastructureError" and "rendezvous failed" in summary["message"], summary

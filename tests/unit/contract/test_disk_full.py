"""ENOSPC is its own failure class: a phase that runs out of disk exits with the not-retried code, its
termination message (`reason: DiskFull`) names the full volume, and the operator reading that message
fails the job with `DiskFull` instead of retrying into the same full volume.

The write really fails with ENOSPC: the checkpoint path is a symlink to /dev/full, whose writes the
kernel refuses with "No space left on device".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from finetune_api.contract.exit_codes import is_retried
from finetune_api.contract.summaries import TrainSummary
from finetune_api.contract.termination import PhaseSummary
from finetune_operator.builders.resolve import resolve_config
from finetune_operator.reconcile import decide
from finetune_operator.settings import OperatorSettings
from finetune_trainer.train.exit_codes import run_phase
from tests.unit.operator.reconcile.conftest import NOW, children, ended, job, make_job, status_patch

pytestmark = pytest.mark.unit

SETTINGS = OperatorSettings(queue_mode="embedded")
TRAINING = {"phase": "Training", "phaseStartedAt": "2030-01-01T10:00:00Z", "observedGeneration": 1,
            "attempts": {"count": 1}, "queue": {"name": "default", "admitted": True, "flavor": "a100"}}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_artifacts_volume_fails_the_job_without_a_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    the_job = make_job(output={"uri": "pvc://artifacts/team/demo"})
    config = resolve_config(the_job, SETTINGS)
    output = tmp_path / "artifacts"
    config = config.model_copy(update={"paths": config.paths.model_copy(update={"output": str(output)})})
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json(by_alias=True))
    checkpoint = output / "checkpoints" / "checkpoint-2" / "model.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.symlink_to("/dev/full")
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(log))

    def save_checkpoint(_config) -> TrainSummary:
        with open(checkpoint, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
        raise AssertionError("the write to /dev/full succeeded")

    code = run_phase("train", str(config_file), save_checkpoint)
    assert not is_retried(code)
    summary = PhaseSummary.parse(log.read_text())
    assert summary is not None and summary.reason == "DiskFull"
    # A write's ENOSPC carries no file name: both volumes the pod writes to are named.
    assert summary.message == ("no space left on a volume: the artifacts volume (pvc://artifacts/team/demo) or the pod's "
                               "scratch (bounded by Helm jobs.scratchSize); retrying would fail the same way")

    # The operator reads the pod's termination message: Failed, DiskFull, no new attempt.
    failed = job("demo-train-a0", "failed", (ended(code, log.read_text()),), failure_reason="user",
                 started_at="2030-01-01T11:00:00Z", finished_at="2030-01-01T11:30:00Z")
    actions = decide(make_job(TRAINING, output={"uri": "pvc://artifacts/team/demo"}), children(failed), NOW, SETTINGS)
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "DiskFull"
    assert "attempt 0 failed with a full volume: no space left on a volume: the artifacts volume (pvc://artifacts/team/demo)" in patch["message"]
    assert not [a for a in actions if type(a).__name__ == "Create"]


@pytest.mark.parametrize(("filename", "message"), [
    ("{output}/checkpoints/checkpoint-2/optimizer.pt",
     "no space left on the artifacts volume (pvc://artifacts/team/demo) writing {output}/checkpoints/checkpoint-2/optimizer.pt: "
     "free space on it or grow the claim; retrying would fail the same way"),
    ("/tmp/hf/hub/model.bin", "no space left writing /tmp/hf/hub/model.bin: the pod's scratch (bounded by Helm jobs.scratchSize) is full"),
], ids=["artifacts", "scratch"])
def test_an_error_naming_its_file_names_its_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filename: str,
                                                   message: str) -> None:
    """`open()` of a new file on a full volume fails with ENOSPC and the file's name."""
    config = resolve_config(make_job(output={"uri": "pvc://artifacts/team/demo"}), SETTINGS)
    output = config.paths.output
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json(by_alias=True))
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(log))

    def write(_config) -> TrainSummary:
        raise OSError(28, os.strerror(28), filename.format(output=output))

    run_phase("train", str(config_file), write)
    summary = PhaseSummary.parse(log.read_text())
    assert summary is not None and summary.reason == "DiskFull"
    assert summary.message == message.format(output=output)

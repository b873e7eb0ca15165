"""`ftctl run` tells the truth: the verdict covers every phase, a failure is one line, a full disk
names its directory and the space needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_api.contract.termination import PhaseSummary
from finetune_cli.local.config import local_config
from finetune_cli.local.disk import MIN_FREE_ENV, DiskFull, check_free_space, free_bytes, required_bytes
from finetune_cli.local.processes import PhaseResult
from finetune_cli.local.report import write_report
from finetune_cli.local.run import RunState, verdict
from finetune_cli.manifests import load_job
from finetune_trainer.failure_reason import is_disk_full, reason_from_log

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (RunState(evaluation={"passed": True}, served=True), "PASSED"),
        (RunState(evaluation={"passed": True}), "PASSED"),  # --no-serve
        (RunState(evaluation={"passed": True}, served=False, failed="serving"), "PASSED gates, SERVING FAILED"),
        (RunState(evaluation={"passed": False}), "REJECTED"),
        (RunState(failed="train"), "FAILED in train"),
        (RunState(current="train", stopped_by="SIGTERM"), "STOPPED during train"),
        (RunState(current="serve", stopped_by="SIGINT", evaluation={"passed": True}, served=True), "PASSED"),  # --keep-serving
        (RunState(unevaluated=True, served=True), "TRAINED (evaluation disabled)"),
        (RunState(unevaluated=True, served=False, failed="serving"), "TRAINED (evaluation disabled), SERVING FAILED"),
    ],
)
def test_the_verdict_covers_every_phase(state: RunState, expected: str) -> None:
    assert verdict(state) == expected


def test_the_report_title_is_the_verdict(tmp_path: Path) -> None:
    state = RunState(evaluation={"passed": True}, served=False, failed="serving")
    report = write_report(tmp_path, "job", verdict(state), None, state.evaluation, [], None, None, [], tmp_path / "none")
    assert report.read_text().startswith("# FineTuneJob `job` — PASSED gates, SERVING FAILED\n")


def test_a_phase_failure_is_one_line_from_the_termination_message_or_the_last_exception() -> None:
    message = PhaseSummary.failure("UserError", "spec.x:\n  bad value", phase="train").model_dump_json()
    assert PhaseResult("train", 1, message).reason == "spec.x: bad value"
    tail = ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "RuntimeError: boom"]
    assert PhaseResult("evaluate", 2, "", tail).reason == "RuntimeError: boom"
    assert PhaseResult("evaluate", -9, "", ["killed"]).reason == "exit -9"


def test_a_validation_error_gives_its_first_detail() -> None:
    log = [
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        "  Value error, the tokenizer is missing [type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]",
    ]
    assert reason_from_log(log) == "ValidationError: Value error, the tokenizer is missing"


def test_enospc_is_recognised_and_not_retried() -> None:
    tail = ["OSError: [Errno 28] No space left on device: '/w/checkpoints/checkpoint-15'"]
    assert is_disk_full(tail[0])
    assert PhaseResult("train", 2, "", tail).disk_full
    assert not PhaseResult("train", 0, "", tail).disk_full


def test_free_space_is_checked_against_the_estimate_or_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = ROOT / "examples" / "quickstart.yaml"
    config = local_config(load_job(manifest), manifest, tmp_path)
    model = tmp_path / "model"  # the estimate reads only the size of the weight files
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * (8 << 20))
    config = config.model_copy(update={"paths": config.paths.model_copy(update={"model": str(model)})})
    monkeypatch.delenv(MIN_FREE_ENV, raising=False)
    assert required_bytes("train", config) > required_bytes("evaluate", config) > 0
    monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) * 2))
    with pytest.raises(DiskFull, match=rf"^disk full: {tmp_path} has .* free and train needs about .*; free some space and run the same command to resume$"):
        check_free_space(tmp_path, "train", config)
    monkeypatch.setenv(MIN_FREE_ENV, "0")
    check_free_space(tmp_path, "train", config)

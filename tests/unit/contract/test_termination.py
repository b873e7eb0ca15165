"""The termination message: typed on both sides, always valid JSON, always within Kubernetes' 4 KiB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api.contract.artifacts import ArtifactRef
from finetune_api.contract.summaries import EvaluateSummary, MergeSummary, PrepareSummary, TrainSummary
from finetune_api.contract.termination import MAX_BYTES, PhaseSummary, encode_message
from finetune_api.job import DataReport, MetricResult
from finetune_trainer.termination import write_termination_message

pytestmark = pytest.mark.unit


def test_a_summary_round_trips_in_camel_case() -> None:
    summary = TrainSummary(step=7, total_steps=9, train_loss=0.5, eval_loss=0.6, train_tokens=100,
                           weights=ArtifactRef(path="adapter", digest="sha256:ab"))
    wire = json.loads(summary.encode())
    assert wire["phase"] == "train" and wire["trainLoss"] == 0.5 and wire["evalLoss"] == 0.6
    assert wire["weights"] == {"path": "adapter", "digest": "sha256:ab"} and "loss" not in wire
    assert TrainSummary.parse(summary.encode()) == summary


def test_a_failure_carries_the_trainers_reason_and_text() -> None:
    failure = PhaseSummary.failure("UserError", "datasets.train line 3: empty assistant turn", phase="evaluate")
    assert json.loads(TrainSummary.failure("UserError", "bad").encode()) == {
        "phase": "train", "ok": False, "reason": "UserError", "message": "bad"}  # no zero step, no empty results
    read = EvaluateSummary.parse(failure.encode())
    assert read is not None and (read.ok, read.reason, read.message) == (
        False, "UserError", "datasets.train line 3: empty assistant turn")


def test_another_phase_garbage_and_nothing_are_not_a_summary() -> None:
    assert TrainSummary.parse(MergeSummary(dtype="float32").encode()) is None
    assert TrainSummary.parse("boom") is None and TrainSummary.parse("") is None and TrainSummary.parse(None) is None
    assert PhaseSummary.parse('{"ok": true}') is None  # no phase


def test_a_reader_ignores_fields_it_does_not_know() -> None:
    newer = json.dumps({"phase": "train", "ok": True, "step": 3, "somethingNew": {"x": 1}})
    read = TrainSummary.parse(newer)
    assert read is not None and read.step == 3


def test_a_diverged_loss_is_written_as_null_not_as_invalid_json() -> None:
    text = TrainSummary(train_loss=float("nan"), eval_loss=float("inf")).encode()
    read = TrainSummary.parse(text)
    assert "NaN" not in text and "Infinity" not in text
    assert read is not None and read.train_loss is None and read.eval_loss is None


def test_a_long_failure_is_shortened_to_valid_json_that_still_parses() -> None:
    summary = PrepareSummary.failure("UserError", "x" * 10_000, data=DataReport(
        train_examples=7, dropped={f"FT{i:03d}": i for i in range(20)}, message="é" * 5000))
    text = summary.encode()
    read = PrepareSummary.parse(text)
    assert len(text.encode()) <= MAX_BYTES
    assert read is not None and read.truncated and read.reason == "UserError" and (read.message or "").startswith("xxx")
    assert read.data is not None and read.data.train_examples == 7


def test_a_long_list_of_results_loses_its_tail_but_stays_typed() -> None:
    metrics = [MetricResult(name=f"grader-{i}-" + "n" * 40, tuned=0.5, base=0.25) for i in range(200)]
    text = EvaluateSummary(passed=True, score="s", metrics=metrics).encode()
    read = EvaluateSummary.parse(text)
    assert len(text.encode()) <= MAX_BYTES
    assert read is not None and read.truncated and read.passed is True and 0 < len(read.metrics) < 200


def test_when_nothing_fits_phase_and_ok_remain() -> None:
    text = encode_message({"phase": "train", "ok": True, "metrics": {f"m{i}": i for i in range(2000)}})
    assert json.loads(text) == {"phase": "train", "ok": True, "truncated": True}
    assert len(encode_message({"phase": "train", "ok": True, "message": "é" * 5000}).encode()) <= MAX_BYTES


def test_the_trainer_writes_it_where_kubernetes_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(target))
    write_termination_message(PrepareSummary(message="ok"))
    assert json.loads(target.read_text()) == {"phase": "prepare", "ok": True, "message": "ok"}

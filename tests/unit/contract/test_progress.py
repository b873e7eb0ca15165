"""The progress line: what the trainer prints is what the operator and `ftctl run` read."""

from __future__ import annotations

import json

import pytest

from finetune_api.contract.progress import MAX_LINE_BYTES, ProgressEvent, latest_progress, read_events

pytestmark = pytest.mark.unit

STEP = ProgressEvent(step=40, total_steps=100, epoch=1.5, loss=0.75, learning_rate=2e-4, tokens_per_second=812.5,
                     eta_seconds=33, train_tokens=5000, metrics={"grad_norm": 0.3})


def test_a_line_round_trips() -> None:
    line = STEP.to_line()
    wire = json.loads(line)
    assert wire["event"] == "progress" and wire["totalSteps"] == 100 and wire["learningRate"] == 2e-4
    assert ProgressEvent.parse_line(line) == STEP
    assert ProgressEvent.parse_line("2030-01-01T00:00:00.1Z stdout F " + line) == STEP


@pytest.mark.parametrize("line", [
    "", "loading model...", '{"event":"eval","step":3}', '{"event":"progress","step":"x","totalSteps":3}',
    '{"event":"progress","step":1', '["progress"]', '{"event":"progress","totalSteps":3}',
])
def test_other_lines_are_skipped(line: str) -> None:
    assert ProgressEvent.parse_line(line) is None


def test_a_non_finite_loss_reads_as_absent() -> None:
    event = ProgressEvent.parse_line('{"event":"progress","step":1,"totalSteps":2,"loss":NaN,"evalLoss":Infinity}')
    assert event is not None and event.loss is None and event.eval_loss is None


def test_a_line_stays_under_4_kib() -> None:
    line = STEP.model_copy(update={"metrics": {f"metric-{i}": float(i) for i in range(2000)}}).to_line()
    assert len(line.encode()) <= MAX_LINE_BYTES and ProgressEvent.parse_line(line) == STEP.model_copy(update={"metrics": {}})


def test_the_latest_state_keeps_the_last_training_and_validation_losses() -> None:
    evaluation = ProgressEvent(step=40, total_steps=100, eval_loss=0.9)
    later = STEP.model_copy(update={"step": 45, "loss": 0.7})
    lines = [STEP.to_line(), "noise", evaluation.to_line(), later.to_line()]
    assert [e.step for e in read_events(lines)] == [40, 40, 45]
    latest = latest_progress(lines)
    assert latest is not None and (latest.step, latest.loss, latest.eval_loss) == (45, 0.7, 0.9)
    assert latest_progress(["nothing"]) is None

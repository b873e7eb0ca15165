"""SIGTERM mid-run → checkpoint and exit 143; the next attempt resumes and ends where an uninterrupted run ends."""

import json
import signal
import subprocess
import sys

import pytest

from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.checkpoint import latest_checkpoint, read_state
from finetune_trainer.train.runner import run_training

from .conftest import layout_of, progress_events, subprocess_env

pytestmark = [pytest.mark.unit, pytest.mark.slow]
SPEC = {"hyperparameters": {"maxSteps": 16, "saveSteps": 100, "microBatchSize": 8}}


def train_process(config_path, termination_log):
    return subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer", "train", "--config", str(config_path)],
        env=subprocess_env(FT_TERMINATION_LOG=str(termination_log)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigterm_checkpoints_and_the_resumed_run_matches_an_uninterrupted_one(make_run, config_path, tmp_path):
    config = make_run(SPEC)
    layout = layout_of(config)
    termination_log = tmp_path / "termination-log"

    first = train_process(config_path, termination_log)
    for line in first.stdout:
        event = json.loads(line)  # stdout carries nothing but progress lines
        if event["step"] >= 5:
            first.send_signal(signal.SIGTERM)
            break
    first.stdout.read()
    assert first.wait(timeout=300) == 143
    checkpoint = latest_checkpoint(layout.checkpoints)
    assert checkpoint is not None and 5 <= int(checkpoint.name.split("-")[1]) < 16
    interrupted = json.loads(termination_log.read_text())
    assert interrupted["interrupted"] is True and len(termination_log.read_bytes()) <= 4096
    tokens_at_stop = read_state(checkpoint)["trainedTokens"]
    assert tokens_at_stop == interrupted["trainTokens"] > 0

    second = train_process(config_path, termination_log)
    lines = second.stdout.read().splitlines()
    assert second.wait(timeout=300) == 0
    resumed = [json.loads(line) for line in lines]
    summary = json.loads(termination_log.read_text())
    assert summary["ok"] and summary["resumedFrom"] == str(checkpoint) and summary["step"] == 16
    assert resumed[0]["step"] == int(checkpoint.name.split("-")[1]) + 1
    assert resumed[0]["trainTokens"] > tokens_at_stop  # counted on, not restarted

    reference = make_run(SPEC)
    reference.paths.output = str(tmp_path / "reference")
    from finetune_trainer.data.prepare import run_prepare

    assert run_prepare(reference).exit_code == 0
    whole = run_training(reference, StopOnSigterm())
    assert whole.step == 16
    assert resumed[-1]["loss"] == pytest.approx(progress_events(reference)[-1]["loss"], rel=1e-3)
    assert summary["trainTokens"] == whole.trained_tokens

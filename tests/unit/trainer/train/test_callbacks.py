import io
import json

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from finetune_api.contract.progress import MAX_LINE_BYTES, ProgressEvent, read_events
from finetune_api.contract.summaries import TrainSummary
from finetune_trainer.termination import write_termination_message
from finetune_trainer.train.callbacks import ProgressCallback, TokenCounter, batch_tokens

pytestmark = pytest.mark.unit


def test_batch_tokens_counts_real_tokens_not_padding():
    assert batch_tokens({"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}) == 8
    assert batch_tokens({"input_ids": torch.ones(1, 7), "position_ids": torch.arange(7)[None]}) == 7
    assert batch_tokens({"prompt_mask": torch.ones(2, 3), "completion_mask": torch.tensor([[1, 0], [1, 1]])}) == 9


def test_progress_line_is_json_with_every_field_and_stays_under_4k(tmp_path):
    out = io.StringIO()
    counter = TokenCounter(start=1000)
    callback = ProgressCallback(counter, tmp_path / "progress.jsonl", stream=out)
    state = TrainerState(max_steps=10)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    callback.on_train_begin(args, state, TrainerControl())
    counter.total += 500
    state.global_step, state.epoch = 4, 0.4
    callback.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-4, "grad_norm": float("nan")})
    callback.on_log(args, state, TrainerControl(), logs={"train_runtime": 3.0})  # the final summary is not progress
    state.global_step = 5
    callback.on_log(args, state, TrainerControl(), logs={"eval_loss": 1.25, "eval_runtime": 0.1})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    train, evaluation = read_events(lines)
    assert (train.step, train.total_steps, train.loss, train.learning_rate, train.eval_loss) == (4, 10, 1.5, 1e-4, None)
    assert train.train_tokens == 1500 and (train.tokens_per_second or 0) > 0 and (train.eta_seconds or 0) >= 0
    assert "grad_norm" not in train.metrics  # NaN is not JSON
    assert (evaluation.step, evaluation.loss, evaluation.eval_loss) == (5, None, 1.25)
    assert (tmp_path / "progress.jsonl").read_text().splitlines() == lines
    huge = ProgressEvent(step=1, total_steps=2, metrics={f"m{i}": i for i in range(2000)}).to_line()
    assert len(huge.encode()) <= MAX_LINE_BYTES and json.loads(huge)["step"] == 1


def test_termination_message_of_a_train_summary_is_small_json(tmp_path):
    path = tmp_path / "termination-log"
    write_termination_message(TrainSummary(metrics={"x" * 50 + str(i): i for i in range(500)}), path)
    text = path.read_text()
    parsed = TrainSummary.parse(text)
    assert len(text.encode()) <= 4096 and parsed is not None and parsed.phase == "train" and parsed.truncated

"""Merging a trained LoRA adapter gives a standalone model that answers like base + adapter."""

import subprocess
import sys

import pytest
import torch

from finetune_api.contract.artifacts import tree_digest
from finetune_api.contract.summaries import MergeSummary
from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.runner import run_training

from .conftest import layout_of, subprocess_env

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def test_merge_writes_a_served_model_equal_to_base_plus_adapter(make_run, config_path, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_run({"hyperparameters": {"maxSteps": 4}})
    run_training(config, StopOnSigterm())
    layout = layout_of(config)
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", "merge", "--config", str(config_path)],
        env=subprocess_env(FT_TERMINATION_LOG=str(log)), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = MergeSummary.parse(log.read_text())
    assert summary is not None and summary.merged is not None and summary.merged.path == "merged"
    assert summary.merged.digest == tree_digest(layout.merged)

    merged = AutoModelForCausalLM.from_pretrained(str(layout.merged))
    tokenizer = AutoTokenizer.from_pretrained(str(layout.merged))
    assert tokenizer.chat_template and (layout.merged / "generation_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(layout.adapter))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "my refund please"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, tuned(**ids).logits, atol=1e-4)


def test_merge_without_a_trained_adapter_is_a_user_error(make_run, config_path, tmp_path):
    make_run()
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", "merge", "--config", str(config_path)],
        env=subprocess_env(FT_TERMINATION_LOG=str(tmp_path / "log")), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "no trained adapter" in done.stderr

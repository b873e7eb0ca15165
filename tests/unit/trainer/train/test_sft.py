"""SFT + LoRA on the quickstart keyword task: the tuned adapter answers the held-out set."""

import json

import pytest
import torch

from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.checkpoint import latest_checkpoint, read_state
from finetune_trainer.train.runner import run_training

from .conftest import QUICKSTART, layout_of, progress_events

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def exact_match(model_dir, adapter_dir, rows) -> float:
    """Greedy answers with the chat template, compared with the reference answer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    hits = 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        hits += answer == row["messages"][-1]["content"]
    return hits / len(rows)


def test_sft_lora_learns_the_held_out_keyword_task(make_run, tiny_model_dir):
    config = make_run(
        {
            "adapter": {"modulesToSave": ["lm_head"]},
            "hyperparameters": {"epochs": 8, "learningRate": 0.003, "microBatchSize": 16, "lrScheduler": "constant_with_warmup"},
        }
    )
    outcome = run_training(config, StopOnSigterm())
    layout = layout_of(config)
    held_out = [json.loads(line) for line in (QUICKSTART / "eval.jsonl").read_text().splitlines()][:40]

    assert not outcome.interrupted and outcome.output == str(layout.adapter)
    assert exact_match(tiny_model_dir, None, held_out) <= 0.1
    assert exact_match(tiny_model_dir, layout.adapter, held_out) >= 0.9

    adapter_config = json.loads((layout.adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny-chat"
    record = json.loads(layout.run_json.read_text())
    assert record["dataHash"] and record["versions"]["trl"] and record["hyperparameters"]["global_batch_size"] == 16
    events = progress_events(config)
    assert [e["step"] for e in events] == list(range(1, outcome.total_steps + 1))
    assert events[-1]["trainTokens"] == outcome.trained_tokens > 0
    assert events[-1]["loss"] < events[0]["loss"]
    assert read_state(latest_checkpoint(layout.checkpoints))["trainedTokens"] == outcome.trained_tokens

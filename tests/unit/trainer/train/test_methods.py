"""DPO, GRPO, QLoRA and full fine-tuning run end to end on the tiny model and move the right way."""

import json

import pytest
import torch

from finetune_trainer.tiny_model import keyword_task
from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.runner import run_training

from .conftest import layout_of, progress_events

pytestmark = [pytest.mark.unit, pytest.mark.slow]


BRIEF = "def grade(output, item):\n    return max(0.0, 1.0 - len(output) / 40)\n"


def mean(values):
    return sum(values) / len(values)


def preference_rows(n: int) -> list[dict]:
    """The keyword task's answer preferred over an evasive reply (a preference a few steps can learn)."""
    rows = []
    for row in keyword_task(n, seed=7):
        *prompt, answer = row["messages"]
        rows.append({"prompt": prompt, "chosen": [answer], "rejected": [{"role": "assistant", "content": "Sorry, I cannot say."}]})
    return rows


def test_dpo_widens_the_preference_margin(make_run):
    config = make_run(
        {
            "datasets": {"train": {"format": "preference"}},
            "method": {"type": "dpo", "dpo": {"beta": 0.1}},
            "hyperparameters": {"maxSteps": 12, "learningRate": 0.002, "batchSize": 8},
        },
        train=preference_rows(96),
    )
    outcome = run_training(config, StopOnSigterm())
    margins = [e["metrics"]["rewards/margins"] for e in progress_events(config)]
    assert outcome.step == 12 and (layout_of(config).adapter / "adapter_model.safetensors").is_file()
    assert mean(margins[-4:]) > mean(margins[:4])
    assert json.loads(layout_of(config).run_json.read_text())["hyperparameters"]["details"]["lossType"] == ["sigmoid", "sft"]


def test_grpo_raises_the_grader_reward(make_run):
    config = make_run(
        {
            "method": {"type": "grpo", "grpo": {"rewards": ["brief"], "numGenerations": 4, "maxCompletionLength": 12}},
            "evaluation": {"graders": [{"name": "brief", "type": "python", "source": BRIEF}]},
            "hyperparameters": {"maxSteps": 16, "learningRate": 0.005, "batchSize": 8, "microBatchSize": 8},
        }
    )
    outcome = run_training(config, StopOnSigterm())
    rewards = [e["metrics"]["reward"] for e in progress_events(config)]
    assert outcome.step == 16 and len(rewards) == 16
    assert mean(rewards[-5:]) > mean(rewards[:5])


def test_qlora_trains_on_a_4bit_base_and_saves_an_adapter(make_run):
    config = make_run({"adapter": {"type": "qlora", "quantization": {"computeDtype": "float32"}}, "hyperparameters": {"maxSteps": 3}})
    outcome = run_training(config, StopOnSigterm())
    adapter = layout_of(config).adapter
    assert outcome.step == 3 and all(e["loss"] is not None for e in progress_events(config))
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


def test_full_fine_tune_saves_a_whole_model(make_run):
    config = make_run({"adapter": {"type": "full"}, "hyperparameters": {"maxSteps": 3, "learningRate": 0.0001}})
    outcome = run_training(config, StopOnSigterm())
    model_dir = layout_of(config).model
    assert outcome.output == str(model_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    assert AutoTokenizer.from_pretrained(str(model_dir)).chat_template
    assert sum(p.numel() for p in model.parameters()) > 100_000

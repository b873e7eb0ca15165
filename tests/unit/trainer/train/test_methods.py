"""DPO, GRPO, QLoRA and full fine-tuning run end to end on the tiny model and move the right way."""

import json
import shutil

import pytest
import torch

from finetune_trainer.tiny_model import keyword_task
from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.runner import run_training

from .conftest import layout_of, progress_events

pytestmark = [pytest.mark.unit, pytest.mark.slow]


# The base answers the quickstart prompts with one short word (a pre-training label, ~5 characters):
# it scores ~0.1 on this grader, so GRPO has the whole way up to 1.0 to climb.
LONG = "def grade(output, item):\n    return min(1.0, len(output) / 40)\n"


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
    # The policy starts as the reference (margin 0); over seeds 1-7 and 42 the last 4 steps averaged
    # 3.19-3.50, so 1.5 is far below the run-to-run spread.
    assert margins[0] == pytest.approx(0.0, abs=1e-6)
    assert mean(margins[-4:]) >= 1.5
    assert json.loads(layout_of(config).run_json.read_text())["hyperparameters"]["details"]["lossType"] == ["sigmoid", "sft"]


def grpo_run(make_run, seed: int, steps: int):
    return make_run(
        {
            "method": {"type": "grpo", "grpo": {"rewards": ["long"], "numGenerations": 4, "maxCompletionLength": 12}},
            "evaluation": {"graders": [{"name": "long", "type": "python", "source": LONG}]},
            "hyperparameters": {"maxSteps": steps, "learningRate": 0.005, "batchSize": 8, "microBatchSize": 8, "seed": seed},
        }
    )


def test_grpo_raises_the_grader_reward(make_run):
    config = grpo_run(make_run, seed=42, steps=16)
    outcome = run_training(config, StopOnSigterm())
    rewards = [e["metrics"]["reward"] for e in progress_events(config)]
    assert outcome.step == 16 and len(rewards) == 16
    # Over seeds 1-7 and 42: the first 2 steps averaged 0.11-0.18, the last 5 0.95-1.00 (a rise of
    # 0.80-0.89); the bounds leave a margin of several times that spread.
    assert mean(rewards[:2]) <= 0.3
    assert mean(rewards[-5:]) - mean(rewards[:2]) >= 0.5


def test_grpo_runs_repeat_exactly_for_a_seed(make_run):
    """Sampled completions, data order and LoRA init all follow spec.hyperparameters.seed."""

    def rewards(seed: int) -> list[float]:
        config = grpo_run(make_run, seed=seed, steps=3)
        run_training(config, StopOnSigterm())
        values = [e["metrics"]["reward"] for e in progress_events(config)]
        shutil.rmtree(layout_of(config).root)  # the next run starts fresh, not from this one's checkpoint
        return values

    first = rewards(7)
    assert rewards(7) == first
    assert rewards(8) != first


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

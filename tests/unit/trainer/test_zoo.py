"""The zoo's models have their family's shape, and a seed builds the same bytes every time.

Two pre-training steps each (the shape, not the skill, is under test here; tests/e2e/test_zoo.py
trains and serves the real builds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api.contract.artifacts import tree_digest
from finetune_trainer.tiny_model import build_model
from finetune_trainer.zoo import ZOO, recipe

pytestmark = [pytest.mark.unit, pytest.mark.slow]

TURN_MARKERS = {
    "zoo-llama": "<|start_header_id|>assistant<|end_header_id|>",
    "zoo-qwen2": "<|im_start|>assistant",
    "zoo-mistral": "[/INST]",
    "zoo-gemma": "<start_of_turn>model",
    "zoo-phi3": "<|assistant|>",
}
CHAT = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Snow?"},
    {"role": "assistant", "content": "winter"},
]


@pytest.mark.parametrize("name", list(ZOO))
def test_each_model_has_its_family_shape(name: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    family = ZOO[name]
    model = build_model(family, tmp_path / name, steps=2)
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == family.model_type and config["max_position_embeddings"] == family.positions
    assert config["tie_word_embeddings"] is family.tie_embeddings
    assert (config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]) >= 32  # vLLM's CPU attention

    tokenizer = AutoTokenizer.from_pretrained(model)
    assert (tokenizer.pad_token is None) == (family.pad is None)
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert TURN_MARKERS[name] in rendered and "Answer in one word." in rendered  # no system role: folded into the user turn
    masked = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    answer = [t for t, m in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(answer).startswith("winter")  # {% generation %} marks the assistant turn

    stops = json.loads((model / "generation_config.json").read_text())["eos_token_id"]
    stops = stops if isinstance(stops, list) else [stops]
    assert {tokenizer.convert_tokens_to_ids(t) for t in (family.eos, *family.stop_tokens)} == set(stops)


def test_a_seed_builds_the_same_model(tmp_path: Path) -> None:
    first = build_model(recipe("zoo-gemma"), tmp_path / "a", steps=2)
    second = build_model(recipe("zoo-gemma"), tmp_path / "b", steps=2)
    assert tree_digest(first) == tree_digest(second)


def test_an_unknown_model_is_one_line_naming_the_flag_and_the_zoo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from finetune_cli.main import main

    assert main(["dev", "tiny-model", str(tmp_path / "m"), "--model", "zoo-falcon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--model: unknown tiny model 'zoo-falcon'") and "zoo-llama" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()

"""Generation backends: the same greedy outputs through a real local vLLM CPU server and through
transformers `generate`, for the base and the adapter, on the same token-id prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.evaluation.generate import (
    GenerationSettings,
    LocalServers,
    ModelPair,
    TransformersBackend,
    VllmBackend,
    api_root,
    encode_prompts,
    load_padded_tokenizer,
)

from .conftest import QUICKSTART

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def test_prompts_are_rendered_once_with_the_chat_template(tiny_model_dir: Path) -> None:
    tokenizer = load_padded_tokenizer(str(tiny_model_dir))
    (ids,) = encode_prompts(tokenizer, [[{"role": "user", "content": "hi"}]])
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert api_root("http://h:8000/") == "http://h:8000/v1" and api_root("http://h/v1") == "http://h/v1"


def test_vllm_and_transformers_give_the_same_greedy_outputs(
    tiny_model_dir: Path, lora_only_adapter: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in (QUICKSTART / "eval.jsonl").read_text().splitlines()][:24]
    pair = ModelPair(str(tiny_model_dir), str(lora_only_adapter), True, "tiny-chat", "tuned", dtype="float32")
    settings = GenerationSettings(max_new_tokens=8, batch_size=8)
    tokenizer = load_padded_tokenizer(pair.base_dir)
    ids = encode_prompts(tokenizer, [r["messages"][:-1] for r in rows])
    hf = TransformersBackend(pair, settings, tokenizer)
    expected = {side: hf.generate(ids, side) for side in ("base", "tuned")}
    hf.close()
    assert expected["base"] != expected["tuned"]

    servers = LocalServers(pair, tmp_path / "logs")
    vllm = VllmBackend(servers.endpoint, settings, on_close=servers.stop)
    try:
        got = {side: vllm.generate(ids, side) for side in ("base", "tuned")}
    finally:
        vllm.close()
    assert got == expected

"""A zoo of tiny models of real architectures, built offline: each with its family's chat-template
convention and special tokens, as the published checkpoints ship them.

No model hub is reachable, so the zoo proves the defaults (lengths, chat template, pad token, LoRA
targets, `--max-model-len`, dtype) on the shapes users bring: Llama 3 headers, ChatML (Qwen2),
`[INST]` (Mistral), Gemma turns, Phi-3 tags; position limits from 256 to 4096; tied and untied
embeddings; tokenizers with and without a pad token, with a BOS added by the tokenizer itself, and
with an end-of-turn token that is not the tokenizer's EOS. Every model is small (hidden 64, 2 layers,
head dim 32 — vLLM's CPU attention needs 32 or more) and pre-trained briefly like the quickstart's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tiny_model import TINY_CHAT, ModelRecipe, build_model

ZOO_VERSION = "zoo-v1"

_SMALL: dict[str, Any] = {"hidden": 64, "intermediate": 128, "heads": 2, "head_dim": 32, "vocab_size": 512, "steps": 80}

_SYSTEM_INTO_FIRST_USER = "{% set ns = namespace(system='') %}"
"""Families without a system role fold the system prompt into the first user turn (as theirs do)."""

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}" + _SYSTEM_INTO_FIRST_USER + "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}{% set ns.system = '' %}"
    "{% else %}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{% endif %}"
    "{% endfor %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}" + _SYSTEM_INTO_FIRST_USER + "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'user' %}{{ '<start_of_turn>user\\n' + ns.system + message['content'] + '<end_of_turn>\\n' }}{% set ns.system = '' %}"
    "{% else %}{{ '<start_of_turn>model\\n' }}{% generation %}{{ message['content'] + '<end_of_turn>' }}{% endgeneration %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

ZOO: dict[str, ModelRecipe] = {
    recipe.name: recipe
    for recipe in (
        # Llama 3 Instruct: no pad token; the tokenizer adds <|begin_of_text|> and the template writes it
        # too; EOS is <|eot_id|>, <|end_of_text|> also stops; untied; more positions than maxLength's default.
        ModelRecipe(
            name="zoo-llama", model_type="llama", chat_template=LLAMA3_TEMPLATE,
            eos="<|eot_id|>", bos="<|begin_of_text|>", pad=None,
            special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            stop_tokens=("<|end_of_text|>",), bos_in_tokenizer=True, positions=2048, tie_embeddings=False,
            kv_heads=1, version=ZOO_VERSION, **_SMALL,
        ),
        # Qwen2: ChatML, no BOS, pad <|endoftext|> (also a stop token), tied embeddings, q/k/v biases.
        ModelRecipe(
            name="zoo-qwen2", model_type="qwen2", chat_template=CHATML_TEMPLATE,
            eos="<|im_end|>", bos=None, pad="<|endoftext|>",
            special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            stop_tokens=("<|endoftext|>",), positions=4096, tie_embeddings=True, kv_heads=1, version=ZOO_VERSION,
            **_SMALL,
        ),
        # Mistral: [INST] … [/INST] turns, no system role, no generation prompt, no pad token, EOS </s>.
        ModelRecipe(
            name="zoo-mistral", model_type="mistral", chat_template=MISTRAL_TEMPLATE,
            eos="</s>", bos="<s>", pad=None,
            special_tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
            bos_in_tokenizer=True, positions=1024, tie_embeddings=False, kv_heads=1,
            config_extra=(("sliding_window", None),), version=ZOO_VERSION, **_SMALL,
        ),
        # Gemma: <start_of_turn>user/model, no system role, tokenizer EOS <eos> but turns end with
        # <end_of_turn> (a stop token in generation_config.json), pad <pad>, tied, 256 positions.
        ModelRecipe(
            name="zoo-gemma", model_type="gemma", chat_template=GEMMA_TEMPLATE,
            eos="<eos>", bos="<bos>", pad="<pad>",
            special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
            stop_tokens=("<end_of_turn>",), bos_in_tokenizer=True, positions=256, tie_embeddings=True, kv_heads=1,
            version=ZOO_VERSION, **_SMALL,
        ),
        # Phi-3: <|user|>/<|assistant|> tags ending in <|end|>; pad is the EOS (<|endoftext|>) as the
        # first Phi-3 releases ship it; fused qkv_proj and gate_up_proj; untied; 512 positions.
        ModelRecipe(
            name="zoo-phi3", model_type="phi3", chat_template=PHI3_TEMPLATE,
            eos="<|endoftext|>", bos="<s>", pad="<|endoftext|>",
            special_tokens=("<unk>", "<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
            stop_tokens=("<|end|>",), positions=512, tie_embeddings=False, kv_heads=2,
            config_extra=(("original_max_position_embeddings", 512), ("rope_scaling", None)), version=ZOO_VERSION,
            **_SMALL,
        ),
    )
}


def build_zoo_model(name: str, directory: str | Path, seed: int = 0, log: Any = None) -> Path:
    """Build (or reuse) the zoo model `name` (one of `ZOO`) in `directory`."""
    return build_model(recipe(name), directory, seed=seed, log=log)


def recipe(name: str) -> ModelRecipe:
    """The recipe called `name`: the quickstart's `tiny-chat` or a zoo model."""
    recipes = {TINY_CHAT.name: TINY_CHAT, **ZOO}
    try:
        return recipes[name]
    except KeyError:
        raise ValueError(f"unknown tiny model {name!r} (one of {', '.join(recipes)})") from None

"""Model-aware checks of the Validating phase: does the spec fit the base model, before any GPU?

A spec can be valid on its own and still fail hours later on its model: a `maxLength` or vLLM
`--max-model-len` beyond the model's positions (vLLM refuses to start), chat data or evaluation
without a chat template, a tokenizer without an end-of-sequence token. (A LoRA rank vLLM cannot
serve needs no model and is refused at admission, `job.py`.) These checks read the model's `config.json` and tokenizer and turn each into a finding that
names the spec field. An unset `datasets.maxLength` is lowered to the model's positions instead (a
warning), and the serving length is derived from the model and the data (`resolve_max_model_len`).

The position limit mirrors vLLM 0.32 (`derive_max_model_len_and_key`, `_get_and_verify_max_len`):
the smallest of the config's length keys (of `text_config` when there is one), scaled by a RoPE
factor, and capped by `tokenizer_config.json`'s `model_max_length`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_api.contract.vllm import derive_max_model_len
from finetune_api.job import DEFAULT_MAX_LENGTH, FineTuneJobSpec

from .rules import CONTEXT_LENGTH, MODEL_CONFIG, NO_CHAT_TEMPLATE, NO_EOS, Findings
from .tokenize import Tokenizer

POSITION_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len",
)
"""vLLM's keys for a model's length, in its order (the smallest present wins)."""
ROPE_TYPES_PRESCALED = frozenset({"default", "su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"})
"""RoPE types whose `factor` is already in the config's length (vLLM does not apply it again)."""
UNBOUNDED = 10**12
"""Tokenizers without a limit store a huge `model_max_length` (1e30): no limit."""


class ModelConfigUnavailable(Exception):
    """The base model directory has no readable `config.json` (a user error: the model path is wrong)."""


@dataclass(frozen=True)
class PositionLimit:
    """How many positions the base model takes, and where that number comes from."""

    positions: int
    source: str
    """e.g. `config.json max_position_embeddings`."""

    def __str__(self) -> str:
        return f"the base model's {self.positions} positions ({self.source})"


def read_model_config(model_dir: str) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise ModelConfigUnavailable(f"{path}: cannot read the base model's config ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ModelConfigUnavailable(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelConfigUnavailable(f"{path}: not a JSON object")
    return config


def with_class_defaults(model_dir: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The config as transformers (and so vLLM) reads it: the architecture's class defaults fill the
    keys the file omits (a Llama config without `max_position_embeddings` has 2048)."""
    from transformers import AutoConfig

    try:
        return dict(AutoConfig.from_pretrained(model_dir).to_dict())
    except Exception:  # noqa: BLE001 - an architecture transformers does not know: the file as it is
        return raw


def _rope_factor(config: dict[str, Any]) -> float:
    if "gemma3" in str(config.get("model_type", "")):
        return 1.0  # its length is already scaled (vLLM's note)
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    if not isinstance(rope, dict):
        return 1.0
    layers = [v for v in rope.values() if isinstance(v, dict)] or [rope]
    factor = 1.0
    for params in layers:
        kind = params.get("rope_type") or params.get("type") or "default"
        if kind not in ROPE_TYPES_PRESCALED and isinstance(params.get("factor"), (int, float)):
            factor = float(params["factor"])
    return factor


def position_limit(config: dict[str, Any], tokenizer_config: dict[str, Any] | None = None) -> PositionLimit | None:
    """The model's position limit as vLLM derives it; None when neither file states one."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    found = [(int(text[k]), k) for k in POSITION_KEYS if isinstance(text.get(k), (int, float)) and text[k] > 0]
    limit: PositionLimit | None = None
    if found:
        positions, key = min(found, key=lambda pair: pair[0])
        if isinstance(text.get("model_max_length"), (int, float)):  # Command-R: overrides the others
            positions, key = int(text["model_max_length"]), "model_max_length"
        factor = _rope_factor(config)
        source = f"config.json {key}" + (f" × RoPE factor {factor:g}" if factor != 1.0 else "")
        limit = PositionLimit(int(positions * factor), source)
    cap = (tokenizer_config or {}).get("model_max_length")
    if isinstance(cap, (int, float)) and 0 < cap < UNBOUNDED and (limit is None or cap < limit.positions):
        limit = PositionLimit(int(cap), "tokenizer_config.json model_max_length")
    return limit


def model_position_limit(model_dir: str, findings: Findings) -> PositionLimit | None:
    """Read `config.json` (and `tokenizer_config.json`) of a model directory; a finding when unreadable."""
    try:
        config = with_class_defaults(model_dir, read_model_config(model_dir))
    except ModelConfigUnavailable as exc:
        findings.add(MODEL_CONFIG, str(Path(model_dir) / "config.json"), 0, str(exc).split(": ", 1)[-1])
        return None
    tokenizer_config = Path(model_dir) / "tokenizer_config.json"
    try:
        extra = json.loads(tokenizer_config.read_text()) if tokenizer_config.exists() else None
    except (OSError, json.JSONDecodeError):
        extra = None  # the tokenizer check reports a broken tokenizer
    return position_limit(config, extra if isinstance(extra, dict) else None)


def resolve_max_length(spec: FineTuneJobSpec, limit: PositionLimit | None, where: str, findings: Findings) -> int:
    """`datasets.maxLength` to tokenize with: the spec's (an error beyond the model's positions), or
    the default lowered to the model's positions (a warning saying so)."""
    explicit = spec.datasets.max_length
    if explicit is not None:
        if limit is not None and explicit > limit.positions:
            findings.add(CONTEXT_LENGTH, where, 0, f"spec.datasets.maxLength: {explicit} exceeds {limit}; lower it or leave it unset")
        return explicit
    if limit is not None and limit.positions < DEFAULT_MAX_LENGTH:
        findings.add(
            CONTEXT_LENGTH, where, 0,
            f"spec.datasets.maxLength is unset: using {limit} instead of the default {DEFAULT_MAX_LENGTH}", "warning",
        )
        return limit.positions
    return DEFAULT_MAX_LENGTH


def resolve_max_model_len(spec: FineTuneJobSpec, limit: PositionLimit | None, longest_example: int, where: str, findings: Findings) -> int:
    """vLLM's `--max-model-len` for evaluation and serving: the spec's (an error beyond the model's
    positions), or the longest example plus `maxNewTokens`, never above the model's positions."""
    explicit = spec.serving.max_model_len
    positions = limit.positions if limit is not None else None
    if explicit is not None:
        if limit is not None and explicit > limit.positions:
            findings.add(CONTEXT_LENGTH, where, 0, f"spec.serving.maxModelLen: {explicit} exceeds {limit}; lower it or leave it unset")
        return explicit
    new_tokens = spec.evaluation.max_new_tokens
    derived = derive_max_model_len(longest_example, new_tokens, positions)
    if limit is not None and longest_example + new_tokens > limit.positions:
        findings.add(
            CONTEXT_LENGTH, where, 0,
            f"spec.serving.maxModelLen is unset: using {limit}; the longest example ({longest_example} tokens) plus "
            f"evaluation.maxNewTokens ({new_tokens}) needs {longest_example + new_tokens}", "warning",
        )
    return derived


def check_eos(tok: Tokenizer, findings: Findings) -> None:
    """Without an end-of-sequence token the tuned model cannot learn to stop, and the loss mask check
    (FT012) has nothing to look for."""
    if not tok.eos_ids:
        findings.add(
            NO_EOS, tok.source, 0,
            "spec.model.uri: the base model's tokenizer has no end-of-sequence token (eos_token in "
            "tokenizer_config.json, eos_token_id in generation_config.json): the tuned model would never stop",
        )


def chat_template_needs(method: str, sft_formats: Iterable[str | None], evaluation: bool) -> list[str]:
    """What needs a chat template: chat SFT data (to find the turns that carry the loss), DPO and GRPO
    (TRL renders their conversations), evaluation (prompts are rendered with it)."""
    needs = []
    if method == "sft" and "messages" in set(sft_formats):
        needs.append("the training data is chat messages (sft.lossOn needs the turns)")
    if method in ("dpo", "grpo"):
        needs.append(f"method {method} renders conversations with it")
    if evaluation:
        needs.append("evaluation renders its prompts with it")
    return needs


def check_chat_template(tok: Tokenizer, needs: list[str], findings: Findings) -> bool:
    """An error naming `spec.model.chatTemplate` when the template is missing but needed; True if so."""
    if tok.chat_template or not needs:
        return False
    findings.add(
        NO_CHAT_TEMPLATE, tok.source, 0,
        f"spec.model.chatTemplate: the base model's tokenizer has no chat template and {'; '.join(needs)}: "
        "set spec.model.chatTemplate (with {% generation %} around the assistant turn)",
    )
    return True

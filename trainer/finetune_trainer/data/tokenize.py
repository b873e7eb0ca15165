"""Tokenize with the base model's chat template and build the loss masks `train` uses as they are.

The loss mask marks the tokens the model learns: the assistant turns (`lossOn: assistant`), only the
final answer (`completion`) or everything (`all`). With `{% generation %}` markers in the template,
transformers computes the assistant mask; without them we find each assistant turn's characters by
rendering the conversation's prefixes (with and without the turn) and warn (FT019), because that
relies on the template rendering prefixes consistently. The end-of-turn token must be inside the
mask (FT012), or the tuned model never learns to stop.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .formats import Example, Message
from .rules import (
    EOS_NOT_TRAINED,
    NO_GENERATION_MARKERS,
    NO_TRAINABLE,
    OVER_LENGTH,
    TEMPLATE,
    TOKENIZER,
    Findings,
    Severity,
)

LossOn = Literal["assistant", "completion", "all"]
OverLength = Literal["drop", "truncate", "fail"]
BATCH = 512
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


class TokenizerUnavailable(Exception):
    """The base model's tokenizer could not be loaded (a user error: the model path is wrong)."""


@dataclass
class Tokenizer:
    """The base model's tokenizer and what the checks need to know about it."""

    tokenizer: Any
    source: str
    eos_ids: frozenset[int]
    chat_template: str | None
    fingerprint: str

    @property
    def has_generation_markers(self) -> bool:
        return bool(self.chat_template and GENERATION_MARKER.search(self.chat_template))


def load_tokenizer(model_dir: str, chat_template: str | None = None) -> Tokenizer:
    """Load the tokenizer of a local (or mounted) base model; `chat_template` replaces its own."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise TokenizerUnavailable(f"{model_dir}: the base model directory does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a broken model dir
        raise TokenizerUnavailable(f"{model_dir}: cannot load the tokenizer: {exc}") from exc
    if chat_template:
        tok.chat_template = chat_template
    eos_ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_config = path / "generation_config.json"
    if gen_config.exists():
        eos = json.loads(gen_config.read_text()).get("eos_token_id")
        eos_ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (path / name).exists():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    digest.update((chat_template or "").encode())
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return Tokenizer(tok, str(path), frozenset(eos_ids), template, digest.hexdigest())


@dataclass
class Encoded:
    """Tokenized rows that passed, their masks, and what happened to the others."""

    examples: list[Example] = field(default_factory=list)
    input_ids: list[list[int]] = field(default_factory=list)
    masks: list[list[int]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def trainable_tokens(self) -> int:
        return sum(sum(m) for m in self.masks)


def _render(tok: Tokenizer, conv: list[Message], tools: Any, generation_prompt: bool = False) -> str:
    return tok.tokenizer.apply_chat_template(conv, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)


def _prefix_spans(tok: Tokenizer, conv: list[Message], tools: Any) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and each assistant turn's character span, found by rendering prefixes."""
    full = _render(tok, conv, tools)
    spans = []
    for i, msg in enumerate(conv):
        if msg["role"] != "assistant":
            continue
        before = _render(tok, conv[:i], tools, generation_prompt=True)
        upto = _render(tok, conv[: i + 1], tools)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError("the template does not render the conversation's prefixes as prefixes, so the assistant turns cannot be located: add {% generation %} markers")
        end = len(upto)
        while end > len(before) and upto[end - 1].isspace():  # the separator after the turn is not learned
            end -= 1
        spans.append((len(before), end))
    return full, spans


def _plain_spans(tok: Tokenizer, ex: Example) -> tuple[str, list[tuple[int, int]]]:
    """Without a chat template: prompt text, then the answer and the end-of-sequence token."""
    if ex.format != "prompt_completion":
        raise ValueError("the tokenizer has no chat template; set spec.model.chatTemplate to train on messages")
    prompt = "".join(m["content"] for m in ex.prompt)
    answer = "".join(m["content"] for m in ex.answer) + (tok.tokenizer.eos_token or "")
    return prompt + answer, [(len(prompt), len(prompt) + len(answer))]


def _masks_from_spans(tok: Tokenizer, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[list[list[int]], list[list[int]]]:
    enc = tok.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    masks = []
    for offsets, row_spans in zip(enc["offset_mapping"], spans, strict=True):
        masks.append([1 if e_tok > s_tok and any(s_tok < e and e_tok > s for s, e in row_spans) else 0 for s_tok, e_tok in offsets])
    return enc["input_ids"], masks


def _encode_batch(tok: Tokenizer, batch: list[Example]) -> list[tuple[list[int], list[int]] | Exception]:
    """Token ids and assistant mask per row, or the exception that rendering it raised."""
    if tok.has_generation_markers:
        if all(ex.tools is None for ex in batch):
            try:
                out = tok.tokenizer.apply_chat_template(
                    [ex.conversation for ex in batch], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
                )
                return list(zip(out["input_ids"], out["assistant_masks"], strict=True))
            except Exception:  # noqa: BLE001 - find the rows that fail, one by one, below
                pass
        results: list[tuple[list[int], list[int]] | Exception] = []
        for ex in batch:
            try:
                out = tok.tokenizer.apply_chat_template(
                    ex.conversation, tools=ex.tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
                )
                results.append((out["input_ids"], out["assistant_masks"]))
            except Exception as exc:  # noqa: BLE001 - a template error is the row's finding
                results.append(exc)
        return results
    rendered: list[tuple[str, list[tuple[int, int]]] | Exception] = []
    for ex in batch:
        try:
            rendered.append(_prefix_spans(tok, ex.conversation, ex.tools) if tok.chat_template else _plain_spans(tok, ex))
        except Exception as exc:  # noqa: BLE001 - a template error is the row's finding
            rendered.append(exc)
    good = [r for r in rendered if not isinstance(r, Exception)]
    ids, masks = _masks_from_spans(tok, [t for t, _ in good], [s for _, s in good]) if good else ([], [])
    pairs = iter(zip(ids, masks, strict=True))
    return [r if isinstance(r, Exception) else next(pairs) for r in rendered]


def weighted_mask(mask: list[int], weights: list[int]) -> list[int]:
    """The assistant mask with the turns of weight 0 taken out: the k-th run of 1s is the k-th
    assistant turn. ValueError when the template's runs do not match the turns one to one."""
    runs: list[tuple[int, int]] = []
    for i, bit in enumerate(mask):
        if bit and (i == 0 or not mask[i - 1]):
            runs.append((i, i + 1))
        elif bit:
            runs[-1] = (runs[-1][0], i + 1)
    if len(runs) != len(weights):
        raise ValueError(f"{len(weights)} assistant turns but {len(runs)} masked spans: per-turn weights cannot be applied "
                         "(the chat template must mark each assistant turn with {% generation %})")
    out = list(mask)
    for (start, end), weight in zip(runs, weights):
        if weight == 0:
            out[start:end] = [0] * (end - start)
    return out


def _last_run(mask: list[int]) -> list[int]:
    """Keep only the last contiguous run of ones (the final answer)."""
    out = [0] * len(mask)
    i = len(mask) - 1
    while i >= 0 and not mask[i]:
        i -= 1
    while i >= 0 and mask[i]:
        out[i] = 1
        i -= 1
    return out


def encode_sft(
    examples: list[Example],
    tok: Tokenizer,
    *,
    max_length: int,
    over_length: OverLength,
    loss_on: LossOn,
    findings: Findings,
) -> Encoded:
    """Tokenize SFT rows, apply the over-length policy and check the loss masks."""
    if loss_on != "all" and tok.chat_template and not tok.has_generation_markers and examples:
        findings.add(
            NO_GENERATION_MARKERS,
            tok.source,
            0,
            "the chat template has no {% generation %} markers; assistant turns were located by rendering prefixes",
            "warning",
        )
    result = Encoded()
    for start in range(0, len(examples), BATCH):
        batch = examples[start : start + BATCH]
        for ex, encoded in zip(batch, _encode_batch(tok, batch), strict=True):
            if isinstance(encoded, Exception):
                findings.add(TEMPLATE, ex.file, ex.line, f"the chat template does not render this row: {encoded}")
                continue
            ids, mask = list(encoded[0]), list(encoded[1])
            weights = [m.get("weight", 1) for m in ex.conversation if m["role"] == "assistant"]
            if loss_on != "all" and 0 in weights:
                try:
                    mask = weighted_mask(mask, weights)
                except ValueError as exc:
                    findings.add(TEMPLATE, ex.file, ex.line, str(exc))
                    continue
            if loss_on == "all":
                mask = [1] * len(ids)
            elif loss_on == "completion":
                mask = _last_run(mask)
            _accept(ex, ids, mask, tok, max_length, over_length, findings, result)
    return result


def _accept(
    ex: Example,
    ids: list[int],
    mask: list[int],
    tok: Tokenizer,
    max_length: int,
    over_length: OverLength,
    findings: Findings,
    result: Encoded,
) -> None:
    if not any(mask):
        findings.add(NO_TRAINABLE, ex.file, ex.line, "no token of this row carries the loss (check the template's generation markers)")
        return
    if tok.eos_ids and not any(t in tok.eos_ids for t, m in zip(ids, mask) if m):
        names = ", ".join(str(tok.tokenizer.convert_ids_to_tokens(i)) for i in sorted(tok.eos_ids))
        findings.add(EOS_NOT_TRAINED, ex.file, ex.line, f"the end-of-turn token ({names}) is outside the loss mask: the model would not learn to stop")
        return
    if len(ids) > max_length:
        if over_length == "drop":
            findings.add(OVER_LENGTH, ex.file, ex.line, f"{len(ids)} tokens > datasets.maxLength {max_length}", "dropped")
            return
        if over_length == "fail":
            findings.add(OVER_LENGTH, ex.file, ex.line, f"{len(ids)} tokens > datasets.maxLength {max_length} (overLength: fail)")
            return
        full_length = len(ids)
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            findings.add(NO_TRAINABLE, ex.file, ex.line, f"truncating {full_length} → {max_length} tokens leaves no trainable token; raise maxLength or use overLength: drop")
            return
        result.truncated += 1
    result.examples.append(ex)
    result.input_ids.append(ids)
    result.masks.append(mask)
    result.lengths.append(len(ids))


def measure(
    examples: list[Example],
    tok: Tokenizer,
    *,
    max_length: int,
    over_length: OverLength,
    findings: Findings,
) -> Encoded:
    """Token lengths of rows kept as text (DPO pairs, GRPO prompts): the template renders, they fit.

    DPO is measured on its longer answer (prompt + chosen or rejected); a GRPO prompt with the
    generation prompt. Truncated rows stay: the trainer truncates them itself.
    """
    result = Encoded()
    for ex in examples:
        convs = [ex.prompt + ex.answer, ex.prompt + ex.rejected] if ex.rejected else [ex.prompt]
        try:
            if tok.chat_template:
                lengths = [len(tok.tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=not ex.rejected, return_dict=True)["input_ids"]) for c in convs]
            else:
                lengths = [len(tok.tokenizer("".join(m["content"] for m in c), add_special_tokens=False)["input_ids"]) for c in convs]
        except Exception as exc:  # noqa: BLE001 - a template error is the row's finding
            findings.add(TEMPLATE, ex.file, ex.line, f"the chat template does not render this row: {exc}")
            continue
        length = max(lengths)
        if length > max_length:
            if over_length != "truncate":
                severity: Severity = "dropped" if over_length == "drop" else "error"
                findings.add(OVER_LENGTH, ex.file, ex.line, f"{length} tokens > datasets.maxLength {max_length}", severity)
                continue
            result.truncated += 1
        result.examples.append(ex)
        result.lengths.append(min(length, max_length))
    return result


def tokenizer_finding(exc: TokenizerUnavailable, findings: Findings) -> None:
    """Record a tokenizer that does not load, under the model path."""
    findings.add(TOKENIZER, str(exc).split(":", 1)[0], 0, str(exc).split(": ", 1)[-1])

"""Loss masks: assistant turns (end-of-turn included), the final answer only, or everything."""

from __future__ import annotations

import dataclasses

import pytest

from finetune_trainer.data.formats import Example
from finetune_trainer.data.rules import Findings
from finetune_trainer.data.tokenize import Tokenizer, encode_sft, load_tokenizer
from finetune_trainer.tiny_model import CHAT_TEMPLATE

pytestmark = pytest.mark.unit
NO_MARKERS = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def example(*turns: tuple[str, str], fmt: str = "messages") -> Example:
    conv = [{"role": r, "content": c} for r, c in turns]
    return Example("f.jsonl", 1, fmt, conv[:-1], conv[-1:])  # type: ignore[arg-type]


ROWS = [
    example(("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello.")),
    example(("user", "One?"), ("assistant", "1"), ("user", "Two?"), ("assistant", "2 and more")),
]


def trained_text(tok: Tokenizer, ids: list[int], mask: list[int]) -> str:
    return tok.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])


def encode(tok: Tokenizer, rows: list[Example], loss_on: str = "assistant", findings: Findings | None = None):  # noqa: ANN201
    return encode_sft(rows, tok, max_length=256, over_length="drop", loss_on=loss_on, findings=findings or Findings())  # type: ignore[arg-type]


def test_assistant_turns_with_end_of_turn_carry_the_loss(tiny_tokenizer: Tokenizer) -> None:
    enc = encode(tiny_tokenizer, ROWS)
    assert trained_text(tiny_tokenizer, enc.input_ids[0], enc.masks[0]) == "Hello.<|im_end|>"
    assert trained_text(tiny_tokenizer, enc.input_ids[1], enc.masks[1]) == "1<|im_end|>2 and more<|im_end|>"


def test_template_without_generation_markers_gives_the_same_masks_and_warns(tiny_model_dir, tiny_tokenizer: Tokenizer) -> None:  # noqa: ANN001
    fallback = load_tokenizer(str(tiny_model_dir), NO_MARKERS)
    assert not fallback.has_generation_markers and fallback.fingerprint != tiny_tokenizer.fingerprint
    findings = Findings()
    assert encode(fallback, ROWS, findings=findings).masks == encode(tiny_tokenizer, ROWS).masks
    assert [f.rule.id for f in findings.warnings] == ["FT019"]


def test_loss_on_completion_trains_only_the_final_answer(tiny_tokenizer: Tokenizer) -> None:
    enc = encode(tiny_tokenizer, ROWS, loss_on="completion")
    assert trained_text(tiny_tokenizer, enc.input_ids[1], enc.masks[1]) == "2 and more<|im_end|>"


def test_loss_on_all_trains_every_token(tiny_tokenizer: Tokenizer) -> None:
    enc = encode(tiny_tokenizer, ROWS, loss_on="all")
    assert all(all(m) for m in enc.masks) and enc.trainable_tokens == enc.tokens


def test_prompt_completion_strings_are_a_user_turn_and_an_answer(tiny_tokenizer: Tokenizer) -> None:
    enc = encode(tiny_tokenizer, [example(("user", "2+2?"), ("assistant", "4"), fmt="prompt_completion")])
    text = tiny_tokenizer.tokenizer.decode(enc.input_ids[0])
    assert text.startswith("<|im_start|>user\n2+2?<|im_end|>")
    assert trained_text(tiny_tokenizer, enc.input_ids[0], enc.masks[0]) == "4<|im_end|>"


def test_without_a_chat_template_prompt_completion_is_plain_text(tiny_model_dir) -> None:  # noqa: ANN001
    plain = load_tokenizer(str(tiny_model_dir))
    plain.tokenizer.chat_template = None
    plain = dataclasses.replace(plain, chat_template=None)
    findings = Findings()
    enc = encode(plain, [example(("user", "2+2? "), ("assistant", "4"), fmt="prompt_completion"), ROWS[0]], findings=findings)
    assert len(enc.examples) == 1
    assert trained_text(plain, enc.input_ids[0], enc.masks[0]) == "4<|im_end|>"
    assert [str(f.rule) for f in findings.errors] == ["FT010 chat-template"]


def test_an_assistant_turn_of_weight_0_is_out_of_the_loss(tiny_model_dir, tiny_tokenizer: Tokenizer) -> None:  # noqa: ANN001
    weighted = dataclasses.replace(ROWS[1], prompt=[
        {"role": "user", "content": "One?"}, {"role": "assistant", "content": "1", "weight": 0}, {"role": "user", "content": "Two?"},
    ])
    for tok in (tiny_tokenizer, load_tokenizer(str(tiny_model_dir), NO_MARKERS)):
        enc = encode(tok, [weighted])
        assert trained_text(tok, enc.input_ids[0], enc.masks[0]) == "2 and more<|im_end|>"
    findings = Findings()
    silent = dataclasses.replace(weighted, answer=[{"role": "assistant", "content": "2 and more", "weight": 0}])
    assert encode(tiny_tokenizer, [silent], findings=findings).masks == []
    assert [f.rule.id for f in findings.errors] == ["FT011"]

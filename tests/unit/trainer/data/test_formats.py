"""Row formats: detection, normalisation to chat turns, and what each use requires."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finetune_trainer.data.formats import Example, detect_format, parse_file
from finetune_trainer.data.rules import Findings
from finetune_trainer.data.sources import SourceFile

pytestmark = pytest.mark.unit


def parse(rows: list[Any], purpose: str = "sft", declared: str = "auto") -> tuple[list[Example], Findings]:
    findings = Findings()
    source = SourceFile("d.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    examples, _, _ = parse_file(source, declared, purpose, findings)  # type: ignore[arg-type]
    return examples, findings


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": []}, "messages"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"prompt": "p"}, "prompt_completion"),
        ({"chosen": "a", "rejected": "b"}, "preference"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        ({"text": "t"}, None),
    ],
)
def test_detect_format(row: dict[str, Any], fmt: str | None) -> None:
    assert detect_format(row) == fmt


def test_prompt_completion_becomes_user_and_assistant_turns() -> None:
    (ex,), findings = parse([{"prompt": "2+2?", "completion": "4"}])
    assert not findings.items
    assert ex.conversation == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert ex.reference == "4"


def test_implicit_preference_prompt_is_the_shared_prefix() -> None:
    user = {"role": "user", "content": "Greet me"}
    row = {"chosen": [user, {"role": "assistant", "content": "Hello!"}], "rejected": [user, {"role": "assistant", "content": "No."}]}
    (ex,), findings = parse([row], "dpo")
    assert not findings.items
    assert ex.prompt == [user] and ex.answer[0]["content"] == "Hello!" and ex.rejected[0]["content"] == "No."


def test_preference_without_a_shared_prompt_is_refused() -> None:
    row = {"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
           "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]}
    _, findings = parse([row], "dpo")
    assert [str(f.rule) for f in findings.errors] == ["FT002 format"]


def test_grpo_prompts_take_the_final_answer_as_reference() -> None:
    (chat,), chat_findings = parse([{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}], "grpo")
    (bare,), bare_findings = parse([{"prompt": "Q2"}], "grpo")
    assert not chat_findings.items and not bare_findings.items
    assert [(e.prompt[-1]["role"], e.answer, e.reference) for e in (chat, bare)] == [("user", [{"role": "assistant", "content": "A"}], "A"), ("user", [], "")]


def test_eval_rows_need_a_reference() -> None:
    rows = [{"messages": [{"role": "user", "content": "Q"}], "reference": "R"}, {"messages": [{"role": "user", "content": "Q"}]}]
    examples, findings = parse(rows, "eval")
    assert [e.reference for e in examples] == ["R"]
    assert [(f.line, f.rule.id) for f in findings.errors] == [(2, "FT007")]


def test_tool_calls_and_results_are_a_valid_conversation() -> None:
    row = {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        {"role": "assistant", "content": "Sunny."},
    ]}
    (ex,), findings = parse([row])
    assert not findings.items and ex.conversation[1]["tool_calls"]


def test_declared_format_is_enforced_per_row() -> None:
    rows = [{"prompt": "p", "completion": "c"}, {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}]
    _, findings = parse(rows, declared="prompt_completion")
    assert [(f.line, f.rule.id) for f in findings.errors] == [(2, "FT002")]


def test_system_turn_is_only_allowed_first() -> None:
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}
    _, findings = parse([row])
    assert [f.message for f in findings.errors] == ["messages[1] is system after user; expected assistant"]


def test_same_prompt_has_the_same_leakage_key_across_formats() -> None:
    (a,), _ = parse([{"prompt": "Q ", "completion": "A"}])
    (b,), _ = parse([{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]}])
    assert a.prompt_key == b.prompt_key and a.row_key != b.row_key


def test_per_turn_weights_are_0_or_1_on_assistant_messages() -> None:
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
             {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 1}]
    (good,), findings = parse([{"messages": turns}])
    assert not findings.errors and good.prompt[1]["weight"] == 0 and good.answer[0]["weight"] == 1
    bad_rows = [
        {"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": True}]},
    ]
    examples, findings = parse(bad_rows)
    assert examples == []
    assert {(f.line, f.message) for f in findings.errors} >= {
        (1, "messages[0].weight is only for assistant messages (this one is user)"),
        (2, "messages[1].weight must be 0 or 1, not 0.5"),
        (3, "messages[1].weight must be 0 or 1, not True"),
    }

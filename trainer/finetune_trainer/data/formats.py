"""Row formats: detect them, check a row's structure, and normalise it to one shape.

Three formats (TRL's): chat `messages`, `prompt`/`completion` (strings, or lists of messages) and
preference pairs `chosen`/`rejected` with an optional `prompt` (without one, the two conversations
must share everything but their last turn). Every row becomes an `Example` whose conversation is a
list of `{"role", "content"}` messages: a string prompt is one user turn, a string answer one
assistant turn. A row's structural problems become findings with its file and row (a JSONL file's
line). The rows come from `sources.SourceFile.rows`, the one reader of every file format.

What a row must hold depends on its use (`Purpose`): `sft` needs a final assistant turn to learn from,
`dpo` a preference pair, `grpo` a prompt (a final assistant turn or `completion` is its reference),
`eval` a prompt and a reference answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .rules import (
    EMPTY_CONTENT,
    FORMAT,
    IDENTICAL_PAIR,
    JSON_PARSE,
    METHOD_FORMAT,
    NO_ANSWER,
    ROLE,
    ROLE_ORDER,
    SOURCE,
    UNKNOWN_KEY,
    VALUE_TYPE,
    Findings,
)
from .sources import NotJson, SourceFile, UnreadableFile

Format = Literal["messages", "prompt_completion", "preference"]
Purpose = Literal["sft", "dpo", "grpo", "eval"]
Message = dict[str, Any]

ROLES = frozenset({"system", "user", "assistant", "tool"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "weight"})
"""`weight` (0 or 1, assistant messages only, as in OpenAI's chat format): 0 keeps the turn out of the loss."""
COMMON_KEYS = frozenset({"id", "metadata", "reference", "category"})
"""`category` names the row's slice in evaluation reports (`evaluation.sliceBy`)."""
ROW_KEYS: dict[str, frozenset[str]] = {
    "messages": frozenset({"messages", "tools"}) | COMMON_KEYS,
    "prompt_completion": frozenset({"prompt", "completion"}) | COMMON_KEYS,
    "preference": frozenset({"prompt", "chosen", "rejected"}) | COMMON_KEYS,
}
# After a turn with this role, the next may have one of these roles (None: the first after system).
NEXT_ROLES: dict[str | None, frozenset[str]] = {
    None: frozenset({"user"}),
    "user": frozenset({"assistant"}),
    "assistant": frozenset({"user", "tool"}),
    "tool": frozenset({"tool", "assistant"}),
}
ACCEPTED: dict[str, frozenset[str]] = {
    "sft": frozenset({"messages", "prompt_completion"}),
    "dpo": frozenset({"preference"}),
    "grpo": frozenset({"messages", "prompt_completion"}),
    "eval": frozenset({"messages", "prompt_completion", "preference"}),
}


@dataclass(slots=True)
class Example:
    """One checked row in normalised form, with its origin and the keys for dedup and leakage."""

    file: str
    line: int
    format: Format
    prompt: list[Message]
    """The conversation up to the answer (what a model is asked)."""
    answer: list[Message] = field(default_factory=list)
    """The final assistant turn(s); for preference rows, the chosen ones."""
    rejected: list[Message] = field(default_factory=list)
    reference: str = ""
    """The reference answer (final assistant content, `completion`, `chosen`, or the `reference` key)."""
    tools: list[Any] | None = None
    raw: dict[str, Any] | None = None
    row_key: bytes = b""
    prompt_key: bytes = b""

    @property
    def conversation(self) -> list[Message]:
        return self.prompt + self.answer


def detect_format(row: dict[str, Any]) -> Format | None:
    """A row's format from its keys, or None when it has none of the known ones."""
    if "messages" in row:
        return "messages"
    if "chosen" in row or "rejected" in row:
        return "preference"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    return None


def _canonical(messages: list[Message]) -> str:
    """The text that identifies messages for dedup and leakage (surrounding whitespace ignored)."""
    return "\x1e".join([m["role"] + "\x1f" + m["content"].strip() for m in messages])


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class _RowChecker:
    """Checks one row, collecting findings under the row's file and line."""

    __slots__ = ("file", "line", "findings", "ok")

    def __init__(self, file: str, line: int, findings: Findings) -> None:
        self.file, self.line, self.findings, self.ok = file, line, findings, True

    def fail(self, rule: Any, message: str) -> None:
        self.findings.add(rule, self.file, self.line, message)
        self.ok = False

    def messages(self, value: Any, where: str, default_role: str) -> list[Message] | None:
        """A string (one turn with `default_role`) or a list of message objects, checked and normalised."""
        if isinstance(value, str):
            if not value.strip():
                self.fail(EMPTY_CONTENT, f"{where} is empty")
                return None
            return [{"role": default_role, "content": value}]
        if not isinstance(value, list):
            self.fail(VALUE_TYPE, f"{where} must be a string or a list of messages, not {type(value).__name__}")
            return None
        if not value:
            self.fail(EMPTY_CONTENT, f"{where} is an empty list")
            return None
        out: list[Message] = []
        for i, msg in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(msg, dict):
                self.fail(VALUE_TYPE, f"{at} must be an object with role and content, not {type(msg).__name__}")
                continue
            plain = len(msg) == 2 and "content" in msg and "role" in msg
            extra = () if plain else msg.keys() - MESSAGE_KEYS
            if extra:
                self.fail(UNKNOWN_KEY, f"{at} has unknown key(s) {', '.join(sorted(map(str, extra)))}; allowed: {', '.join(sorted(MESSAGE_KEYS))}")
            role = msg.get("role")
            if role not in ROLES:
                self.fail(ROLE, f"{at}.role is {role!r}; allowed: {', '.join(sorted(ROLES))}")
                continue
            content = msg.get("content")
            if content is None and role == "assistant" and msg.get("tool_calls"):
                content = ""
            elif not isinstance(content, str):
                self.fail(VALUE_TYPE, f"{at}.content must be a string, not {type(content).__name__}")
                continue
            elif not content.strip():
                self.fail(EMPTY_CONTENT, f"{at}.content ({role}) is empty")
                continue
            norm: Message = {"role": role, "content": content}
            if not plain:
                norm.update((key, msg[key]) for key in ("name", "tool_calls", "tool_call_id") if key in msg)
                if "weight" in msg and not self.weight(msg["weight"], role, at):
                    continue
                if "weight" in msg:
                    norm["weight"] = msg["weight"]
            out.append(norm)
        return out

    def weight(self, value: Any, role: str, at: str) -> bool:
        """A per-turn loss weight is 0 or 1 on an assistant message."""
        if role != "assistant":
            self.fail(VALUE_TYPE, f"{at}.weight is only for assistant messages (this one is {role})")
            return False
        if isinstance(value, bool) or value not in (0, 1):
            self.fail(VALUE_TYPE, f"{at}.weight must be 0 or 1, not {value!r}")
            return False
        return True

    def order(self, messages: list[Message], where: str) -> None:
        """Optional leading system turn, then user/assistant alternating (tool results after assistant)."""
        prev: str | None = None
        for i, msg in enumerate(messages):
            role = msg["role"]
            if role == "system" and i == 0:
                continue
            allowed = NEXT_ROLES[prev]
            if role not in allowed:
                after = f"after {prev}" if prev else ("after the system turn" if i else "as the first turn")
                self.fail(ROLE_ORDER, f"{where}[{i}] is {role} {after}; expected {' or '.join(sorted(allowed))}")
                return
            prev = role


def _split_answer(conv: list[Message]) -> tuple[list[Message], list[Message]]:
    """The prompt and the final assistant turn (if the conversation ends with one)."""
    if conv and conv[-1]["role"] == "assistant":
        return conv[:-1], conv[-1:]
    return conv, []


def normalise_row(
    row: Any, fmt: Format, purpose: Purpose, file: str, line: int, findings: Findings
) -> Example | None:
    """Check one parsed row of a file whose format is `fmt`; the Example, or None when it has errors."""
    check = _RowChecker(file, line, findings)
    extra = row.keys() - ROW_KEYS[fmt]
    if extra:
        check.fail(UNKNOWN_KEY, f"unknown key(s) {', '.join(sorted(map(str, extra)))} for {fmt} rows; allowed: {', '.join(sorted(ROW_KEYS[fmt]))}")
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, str):
        check.fail(VALUE_TYPE, f"reference must be a string, not {type(reference).__name__}")
        reference = None
    tools = row.get("tools")
    ex: Example | None = None
    prompt: list[Message] | None
    answer: list[Message] | None
    if fmt == "messages":
        conv = check.messages(row["messages"], "messages", "user")
        if conv is None:
            return None
        check.order(conv, "messages")
        prompt, answer = _split_answer(conv)
        ex = Example(file, line, fmt, prompt, answer, tools=tools if isinstance(tools, list) else None)
    elif fmt == "prompt_completion":
        if "prompt" not in row:
            check.fail(FORMAT, "prompt/completion row without a prompt")
            return None
        prompt = check.messages(row["prompt"], "prompt", "user")
        answer = check.messages(row["completion"], "completion", "assistant") if "completion" in row else []
        if prompt is None or answer is None:
            return None
        check.order(prompt + answer, "prompt+completion")
        ex = Example(file, line, fmt, prompt, answer)
    else:
        ex = _preference(row, check, file, line)
    if ex is None or not check.ok:
        return None
    ex.reference = reference if reference is not None else (ex.answer[-1]["content"] if ex.answer else "")
    _purpose_checks(ex, purpose, check)
    if not check.ok:
        return None
    prompt_text = _canonical(ex.prompt)
    ex.prompt_key = _digest(prompt_text)
    ex.row_key = _digest(prompt_text + "\x1d" + _canonical(ex.answer) + "\x1d" + _canonical(ex.rejected))
    if purpose in ("grpo", "eval"):
        ex.raw = row
    return ex


def _preference(row: dict[str, Any], check: _RowChecker, file: str, line: int) -> Example | None:
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        check.fail(FORMAT, f"preference row without {' and '.join(missing)}")
        return None
    chosen = check.messages(row["chosen"], "chosen", "assistant")
    rejected = check.messages(row["rejected"], "rejected", "assistant")
    prompt = check.messages(row["prompt"], "prompt", "user") if "prompt" in row else None
    if chosen is None or rejected is None or ("prompt" in row and prompt is None):
        return None
    if prompt is None:
        # Implicit prompt: the conversations share everything but their final assistant turn.
        (prompt, chosen_answer), (rejected_prompt, rejected_answer) = _split_answer(chosen), _split_answer(rejected)
        if not prompt or [(m["role"], m["content"]) for m in prompt] != [(m["role"], m["content"]) for m in rejected_prompt]:
            check.fail(FORMAT, "preference row without `prompt` whose chosen and rejected do not share a prompt")
            return None
        chosen, rejected = chosen_answer, rejected_answer
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if not answer or answer[-1]["role"] != "assistant":
            check.fail(ROLE_ORDER, f"{name} must end with an assistant turn")
    if not check.ok:
        return None
    check.order(prompt + chosen, "prompt+chosen")
    check.order(prompt + rejected, "prompt+rejected")
    if [m["content"].strip() for m in chosen] == [m["content"].strip() for m in rejected]:
        check.fail(IDENTICAL_PAIR, "chosen and rejected are the same answer: the pair teaches nothing")
    return Example(file, line, "preference", prompt, chosen, rejected)


def _purpose_checks(ex: Example, purpose: Purpose, check: _RowChecker) -> None:
    if purpose == "sft" and not ex.answer:
        if not any(m["role"] == "assistant" for m in ex.prompt):
            check.fail(NO_ANSWER, "no assistant turn (or completion) to learn from")
        else:
            check.fail(ROLE_ORDER, f"the conversation ends with a {ex.prompt[-1]['role']} turn; SFT rows end with the assistant's answer")
    elif purpose == "eval" and not ex.reference:
        check.fail(NO_ANSWER, "eval rows need a reference answer: end with an assistant turn, or add `completion` or `reference`")
    elif purpose == "grpo" and ex.prompt and ex.prompt[-1]["role"] not in ("user", "tool"):
        check.fail(ROLE_ORDER, "a GRPO prompt ends with a user turn")


def parse_file(
    source: SourceFile,
    declared: Literal["auto", "messages", "prompt_completion", "preference"],
    purpose: Purpose,
    findings: Findings,
    columns: Mapping[str, str] | None = None,
) -> tuple[list[Example], Format | None, int]:
    """Check every row of one file (`columns`: our field names → the dataset's). Returns the good
    rows, the file's format and the rows read."""
    fmt: Format | None = None if declared == "auto" else declared
    fmt_line = 0
    examples: list[Example] = []
    read = 0
    name = source.name
    try:
        for number, row in source.rows(columns):
            read += 1
            if isinstance(row, NotJson):
                findings.add(JSON_PARSE, name, number, row.message)
                continue
            if not isinstance(row, dict):
                findings.add(JSON_PARSE, name, number, f"a row must be a JSON object, not {type(row).__name__}")
                continue
            row_fmt = detect_format(row)
            if row_fmt is None:
                keys = ", ".join(sorted(map(str, row))) or "no keys"
                findings.add(FORMAT, name, number, f"row has none of messages, prompt/completion, chosen/rejected (it has {keys})")
                continue
            if fmt is None:
                fmt, fmt_line = row_fmt, number
                if fmt not in ACCEPTED[purpose]:
                    findings.add(METHOD_FORMAT, name, number, _method_message(fmt, purpose))
            elif row_fmt != fmt:
                origin = f"{'line' if source.format == 'jsonl' else 'row'} {fmt_line}" if fmt_line else "the dataset's declared format"
                findings.add(FORMAT, name, number, f"{row_fmt} row in a {fmt} file ({origin}); use one format per file")
                continue
            if fmt not in ACCEPTED[purpose]:
                continue
            ex = normalise_row(row, fmt, purpose, name, number, findings)
            if ex is not None:
                examples.append(ex)
    except UnreadableFile as exc:
        findings.add(SOURCE, name, 0, str(exc))
    if declared != "auto" and declared not in ACCEPTED[purpose] and read:
        findings.add(METHOD_FORMAT, name, 0, _method_message(declared, purpose))
    return examples, fmt, read


def _method_message(fmt: str, purpose: Purpose) -> str:
    need = {
        "sft": "messages or prompt/completion rows",
        "dpo": "preference rows (chosen/rejected)",
        "grpo": "prompts: messages or prompt/completion rows",
        "eval": "rows with a prompt and a reference",
    }[purpose]
    return f"{fmt} rows cannot be used for {purpose}: it needs {need}"

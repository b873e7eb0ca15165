"""The data checks' rule ids, the findings they produce, and the set-level checks (dedup, leakage).

Rule ids are stable: users grep for them, docs link them, tests assert them. Every finding names a
file and a 1-based row: a JSONL file's line, a Parquet file's or saved dataset's row (0 when it
concerns the whole file), printed as
`file:line: FT001 json-parse: message`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from collections.abc import Iterable

if TYPE_CHECKING:
    from .formats import Example

Severity = Literal["error", "warning", "dropped"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: a stable id, a short name and what it guards against."""

    id: str
    name: str
    summary: str

    def __str__(self) -> str:
        return f"{self.id} {self.name}"


JSON_PARSE = Rule("FT001", "json-parse", "every row is one JSON object (a JSONL line that parses; a table row)")
FORMAT = Rule("FT002", "format", "one format per file: messages, prompt/completion or chosen/rejected")
UNKNOWN_KEY = Rule("FT003", "unknown-key", "only the keys of the row's format (and id, metadata, reference, category, tools)")
ROLE = Rule("FT004", "role", "roles are system, user, assistant or tool")
ROLE_ORDER = Rule("FT005", "role-order", "optional leading system, then user/assistant alternating")
EMPTY_CONTENT = Rule("FT006", "empty-content", "no empty message, prompt or answer")
NO_ANSWER = Rule("FT007", "no-assistant-turn", "an assistant turn (or completion) to learn from")
IDENTICAL_PAIR = Rule("FT008", "identical-pair", "chosen and rejected differ")
MIN_EXAMPLES = Rule("FT009", "min-examples", "at least datasets.minExamples usable rows (warns under 50)")
TEMPLATE = Rule("FT010", "chat-template", "the chat template renders every row")
NO_TRAINABLE = Rule("FT011", "no-trainable-tokens", "at least one token carries the loss after truncation")
EOS_NOT_TRAINED = Rule("FT012", "eos-not-in-loss", "the end-of-turn token is inside the loss mask")
OVER_LENGTH = Rule("FT013", "over-length", "rows longer than datasets.maxLength follow datasets.overLength")
DUPLICATE = Rule("FT014", "duplicate", "exact duplicate rows are removed from train")
LEAKAGE = Rule("FT015", "leakage", "train prompts do not appear in the validation or eval set")
METHOD_FORMAT = Rule("FT016", "method-format", "the format fits the method: dpo needs pairs, sft answers")
SOURCE = Rule("FT017", "source", "the dataset location exists and holds readable JSONL, Parquet or saved-dataset files")
VALUE_TYPE = Rule("FT018", "value-type", "values have the right JSON type (a message's weight: 0 or 1, assistant only)")
NO_GENERATION_MARKERS = Rule("FT019", "no-generation-markers", "the template marks assistant turns for the loss")
TOKENIZER = Rule("FT020", "tokenizer", "the base model's tokenizer loads")
CONTEXT_LENGTH = Rule("FT021", "context-length", "datasets.maxLength and serving.maxModelLen fit the base model's positions")
# FT022 (lora-rank) is retired: the rank vLLM serves is an admission rule (finetune_api.job); ids are not reused.
NO_CHAT_TEMPLATE = Rule("FT023", "no-chat-template", "a chat template exists where chat data, DPO, GRPO or evaluation need one")
NO_EOS = Rule("FT024", "no-eos-token", "the tokenizer has an end-of-sequence token")
MODEL_CONFIG = Rule("FT025", "model-config", "the base model directory has a readable config.json")

RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        JSON_PARSE, FORMAT, UNKNOWN_KEY, ROLE, ROLE_ORDER, EMPTY_CONTENT, NO_ANSWER, IDENTICAL_PAIR,
        MIN_EXAMPLES, TEMPLATE, NO_TRAINABLE, EOS_NOT_TRAINED, OVER_LENGTH, DUPLICATE, LEAKAGE,
        METHOD_FORMAT, SOURCE, VALUE_TYPE, NO_GENERATION_MARKERS, TOKENIZER, CONTEXT_LENGTH,
        NO_CHAT_TEMPLATE, NO_EOS, MODEL_CONFIG,
    )
}
WARN_UNDER_EXAMPLES = 50


@dataclass(slots=True)
class Finding:
    """One problem at one place. `dropped` findings removed a row and did not fail the phase."""

    rule: Rule
    file: str
    line: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.file}:{self.line}: {self.rule}: {prefix}{self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule.id,
            "name": self.rule.name,
            "file": self.file,
            "line": self.line,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class Findings:
    """Every finding of a run, with counts by rule and severity."""

    items: list[Finding] = field(default_factory=list)

    def add(self, rule: Rule, file: str, line: int, message: str, severity: Severity = "error") -> None:
        self.items.append(Finding(rule, file, line, message, severity))

    def extend(self, other: Iterable[Finding]) -> None:
        self.items.extend(other)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.items if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.items if f.severity == "warning"]

    def count(self, severity: Severity) -> Counter[str]:
        return Counter(f.rule.id for f in self.items if f.severity == severity)

    def printable(self, per_rule: int = 100) -> list[str]:
        """Findings as lines, at most `per_rule` per rule, errors first, with a line for the rest."""
        shown: Counter[str] = Counter()
        hidden: Counter[str] = Counter()
        lines = []
        order = {"error": 0, "warning": 1, "dropped": 2}
        for f in sorted(self.items, key=lambda f: order[f.severity]):
            key = f"{f.rule.id}:{f.severity}"
            if shown[key] < per_rule:
                shown[key] += 1
                lines.append(str(f))
            else:
                hidden[key] += 1
        for key, n in hidden.items():
            rule_id, severity = key.split(":")
            lines.append(f"… {n} more {severity} findings of {RULES[rule_id]}")
        return lines


def dedup(examples: list[Example], findings: Findings) -> list[Example]:
    """Keep the first of exact duplicates (same normalised row); the others are dropped as FT014."""
    first: dict[bytes, Example] = {}
    kept = []
    for ex in examples:
        seen = first.get(ex.row_key)
        if seen is None:
            first[ex.row_key] = ex
            kept.append(ex)
        else:
            findings.add(DUPLICATE, ex.file, ex.line, f"duplicate of {seen.file}:{seen.line}", "dropped")
    return kept


def leakage(
    train: list[Example],
    held_out: dict[str, list[Example]],
    policy: Literal["remove", "fail", "ignore"],
    findings: Findings,
) -> tuple[list[Example], dict[str, int]]:
    """Train rows whose prompt appears in a held-out split (the same prompt with another answer counts).

    `remove` drops them from train, `fail` makes each an error, `ignore` keeps them with a warning.
    Returns the train rows to keep and the number of leaked train rows per held-out split.
    """
    owners: dict[bytes, tuple[str, Example]] = {}
    for split, rows in held_out.items():
        for ex in rows:
            owners.setdefault(ex.prompt_key, (split, ex))
    counts: Counter[str] = Counter()
    kept = []
    severities: dict[str, Severity] = {"remove": "dropped", "fail": "error", "ignore": "warning"}
    severity = severities[policy]
    for ex in train:
        hit = owners.get(ex.prompt_key)
        if hit is None:
            kept.append(ex)
            continue
        split, other = hit
        counts[split] += 1
        findings.add(LEAKAGE, ex.file, ex.line, f"prompt also in the {split} set at {other.file}:{other.line}", severity)
        if policy != "remove":
            kept.append(ex)
    return kept, dict(counts)


def min_examples(rows: list[Example], minimum: int, file: str, findings: Findings) -> None:
    """Too few usable rows fail; fewer than 50 warn (a fine-tune on a handful of rows rarely helps)."""
    n = len(rows)
    if n < minimum:
        findings.add(MIN_EXAMPLES, file, 0, f"{n} usable training rows, datasets.minExamples is {minimum}")
    elif n < WARN_UNDER_EXAMPLES:
        findings.add(MIN_EXAMPLES, file, 0, f"only {n} usable training rows (fewer than {WARN_UNDER_EXAMPLES})", "warning")

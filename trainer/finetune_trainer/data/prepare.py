"""The prepare phase: check the datasets on CPU, tokenize them once, and write the prepared dataset.

Order: the model checks (config.json positions against maxLength, the LoRA rank vLLM serves;
`model_fit.py`) → read → structural checks per row → dedup (train) → leakage (train vs
validation/eval, keyed by the prompt) → the tokenizer checks (chat template where needed, EOS) →
tokenize (template, over-length, trainable tokens, end-of-turn in the loss) → minimum example count
→ the serving length (maxModelLen from the model and the longest example) → report. Any error
finding fails the phase with exit 1 (do not retry) and nothing is written but the report; a store
that cannot be read exits 2 (retry).

Exactly what the prepared splits hold (so `train` passes them straight to TRL):
- sft train/validation: `input_ids` (int32 lists) and `assistant_masks` (int8 lists, 1 = the token
  carries the loss, already reflecting `spec.method.sft.lossOn` and truncation). TRL 1.16's SFTTrainer
  sees `input_ids`, skips tokenizing, and always applies `assistant_masks` when building labels.
- dpo train/validation: `prompt`, `chosen`, `rejected` as lists of `{role, content}` messages.
- grpo train/validation: `prompt` (messages), `reference` (str, may be empty), `row` (original JSON).
- eval: `prompt` (messages), `reference` (str), `row` (original JSON, for graders' `item.<field>`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune_api.contract.artifacts import tree_digest
from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK, USER_ERROR
from finetune_api.contract.summaries import PrepareSummary
from finetune_api.contract.termination import FailureReason
from finetune_api.job import DataReport, DatasetRef
from finetune_api.contract.sources import FetchSummary
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from . import rules
from .formats import Example, Format, Purpose, parse_file
from .model_fit import (
    PositionLimit,
    chat_template_needs,
    check_chat_template,
    check_eos,
    model_position_limit,
    resolve_max_length,
    resolve_max_model_len,
)
from .prepared import clear_pointer, content_hash, write_json_atomic, write_prepared
from .report import build_report, cost_estimate, count_parameters, length_histogram, length_stats, render_markdown, summary
from .rules import Findings
from .sources import DeclaredFileFormat, MissingData, SourceFile, SourceUnavailable, column_mapping, fingerprint, read_dataset
from .tokenize import Encoded, LossOn, OverLength, Tokenizer, TokenizerUnavailable, encode_sft, load_tokenizer, measure, tokenizer_finding

DeclaredFormat = Literal["auto", "messages", "prompt_completion", "preference"]


@dataclass(frozen=True)
class CheckSettings:
    """The knobs of the checks (spec.datasets, spec.method)."""

    method: Literal["sft", "dpo", "grpo"] = "sft"
    loss_on: LossOn = "assistant"
    max_length: int = 1024
    over_length: OverLength = "drop"
    dedup: bool = True
    min_examples: int = 1
    leakage: Literal["remove", "fail", "ignore"] = "remove"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SplitSource:
    """A split to check: where it is, its declared row and file formats, the dataset's column names
    for our fields, and what it is used for."""

    name: str
    uri: str
    format: DeclaredFormat = "auto"
    purpose: Purpose = "sft"
    file_format: DeclaredFileFormat = "auto"
    split: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, path: str, ref: DatasetRef, purpose: Purpose) -> SplitSource:
        """The split a spec dataset names, read from `path` (where the phase finds it)."""
        return cls(name, path, ref.format, purpose, ref.file_format, ref.split, column_mapping(ref))

    @property
    def location(self) -> tuple[str, str, str | None]:
        """What identifies the files read (two splits on one location read it once)."""
        return self.uri, self.file_format, self.split


@dataclass
class SplitResult:
    """One split after the checks."""

    source: SplitSource
    files: list[Any] = field(default_factory=list)
    rows: int = 0
    format: Format | None = None
    examples: list[Example] = field(default_factory=list)
    encoded: Encoded | None = None

    def to_json(self, max_length: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": self.source.uri,
            "files": [f.name for f in self.files],
            "format": self.format,
            "purpose": self.source.purpose,
            "rows": self.rows,
            "examples": len(self.kept),
        }
        if self.encoded is not None:
            out |= {
                "tokens": self.encoded.tokens,
                "truncated": self.encoded.truncated,
                "length": length_stats(self.encoded.lengths),
                "histogram": length_histogram(self.encoded.lengths, max_length),
            }
            if self.encoded.masks:
                out["trainable_tokens"] = self.encoded.trainable_tokens
        return out

    @property
    def kept(self) -> list[Example]:
        return self.encoded.examples if self.encoded is not None else self.examples


@dataclass
class CheckOutcome:
    """Every split's result, the findings, leakage counts and stage timings."""

    splits: dict[str, SplitResult]
    findings: Findings
    leakage: dict[str, Any]
    timings: dict[str, float]

    @property
    def longest_example(self) -> int:
        """Tokens of the longest example kept in any split (0 when nothing was tokenized)."""
        return max((max(s.encoded.lengths, default=0) for s in self.splits.values() if s.encoded is not None), default=0)


def check_datasets(
    sources: list[SplitSource],
    settings: CheckSettings,
    tokenizer: Tokenizer | None,
    findings: Findings | None = None,
    evaluation: bool = False,
) -> CheckOutcome:
    """Run every check on the splits; tokenizer None runs the structural checks only. `evaluation`:
    the held-out set will be evaluated (its prompts are rendered with the chat template).

    Raises SourceUnavailable when a store cannot be read (infrastructure).
    """
    findings = findings if findings is not None else Findings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    splits: dict[str, SplitResult] = {}
    # The validation set doubles as the eval set when there is no eval set: read each location once.
    # Failures are not cached, so every split that names a missing location gets its own finding.
    files_by_location: dict[tuple[str, str, str | None], list[SourceFile]] = {}
    for src in sources:
        result = SplitResult(src)
        splits[src.name] = result
        try:
            if src.location not in files_by_location:
                files_by_location[src.location] = read_dataset(src.uri, src.file_format, src.split)
            result.files = list(files_by_location[src.location])
        except MissingData as exc:
            findings.add(rules.SOURCE, src.uri, 0, str(exc).removeprefix(f"{src.uri}: "))
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for result in splits.values():
        for source_file in result.files:
            examples, fmt, read = parse_file(source_file, result.source.format, result.source.purpose, findings,
                                             result.source.columns)
            result.examples.extend(examples)
            result.rows += read
            result.format = result.format or fmt
            if read == 0:
                findings.add(rules.SOURCE, source_file.name, 0, "the file holds no rows")
    train = splits.get("train")
    if train is not None and settings.dedup:
        train.examples = rules.dedup(train.examples, findings)
    held_out = {name: s.examples for name, s in splits.items() if name in ("validation", "eval")}
    leak: dict[str, Any] = {"policy": settings.leakage, "train": {}, "validation_eval": 0}
    if train is not None and held_out:
        train.examples, leak["train"] = rules.leakage(train.examples, held_out, settings.leakage, findings)
    if "validation" in held_out and "eval" in held_out and splits["eval"].source.uri != splits["validation"].source.uri:
        val_keys = {ex.prompt_key for ex in held_out["validation"]}
        leak["validation_eval"] = sum(ex.prompt_key in val_keys for ex in held_out["eval"])
        if leak["validation_eval"]:
            first = next(ex for ex in held_out["eval"] if ex.prompt_key in val_keys)
            findings.add(rules.LEAKAGE, first.file, first.line, f"{leak['validation_eval']} eval prompts are also in the validation set", "warning")
    timings["checks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if tokenizer is not None:
        check_eos(tokenizer, findings)
        needs = chat_template_needs(settings.method, [s.format for s in splits.values() if s.source.purpose == "sft"], evaluation)
        if check_chat_template(tokenizer, needs, findings):
            tokenizer = None  # every row would fail to render: one finding instead of one per row
    if tokenizer is not None:
        for result in splits.values():
            result.encoded = _tokenize_split(result, settings, tokenizer, findings)
    timings["tokenize"] = time.perf_counter() - t0
    if train is not None and train.files:
        rules.min_examples(train.kept, settings.min_examples, train.files[0].name, findings)
    return CheckOutcome(splits, findings, leak, timings)


def _tokenize_split(result: SplitResult, settings: CheckSettings, tok: Tokenizer, findings: Findings) -> Encoded:
    if result.source.purpose == "sft":
        return encode_sft(
            result.examples, tok, max_length=settings.max_length, over_length=settings.over_length,
            loss_on=settings.loss_on, findings=findings,
        )
    # Eval prompts are only measured: the eval set is never shortened or dropped by length.
    policy: OverLength = "truncate" if result.source.purpose == "eval" else settings.over_length
    return measure(result.examples, tok, max_length=settings.max_length, over_length=policy, findings=findings)


# ------------------------------------------------------------------------------------ the phase
@dataclass
class PrepareResult:
    """What the phase did: the exit code (0 ok, 1 user error, 2 infrastructure) and its report."""

    exit_code: int
    findings: Findings
    report: dict[str, Any]
    summary: DataReport
    prepared_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    def termination(self) -> PrepareSummary:
        """The termination message: the DataReport summary, and on failure the first findings."""
        if self.ok:
            return PrepareSummary(data=self.summary, message=self.summary.message)
        reason: FailureReason = "UserError" if self.exit_code == USER_ERROR else "InfrastructureError"
        text = "; ".join(str(f) for f in self.findings.errors[:5]) or self.summary.message
        return PrepareSummary.failure(reason, text, data=self.summary)


def settings_from_config(config: ResolvedConfig, max_length: int) -> CheckSettings:
    """The checks' knobs from the spec, with `datasets.maxLength` as resolved against the model."""
    data, method = config.spec.datasets, config.spec.method
    return CheckSettings(
        method=method.type, loss_on=method.sft.loss_on, max_length=max_length, over_length=data.over_length,
        dedup=data.dedup, min_examples=data.min_examples, leakage=data.leakage,
    )


def sources_from_config(config: ResolvedConfig) -> list[SplitSource]:
    """Train, validation and eval; without an eval set the validation set is the held-out set."""
    data, paths, method = config.spec.datasets, config.paths, config.spec.method.type
    sources = [SplitSource.of("train", paths.train, data.train, method)]
    if paths.validation and data.validation is not None:
        sources.append(SplitSource.of("validation", paths.validation, data.validation, method))
    if paths.eval and data.eval is not None:
        sources.append(SplitSource.of("eval", paths.eval, data.eval, "eval"))
    elif paths.validation and data.validation is not None:
        sources.append(SplitSource.of("eval", paths.validation, data.validation, "eval"))
    return sources


def _infrastructure_failure(message: str) -> PrepareResult:
    report = {"ok": False, "message": message, "splits": {}, "dropped": {}, "warnings": 0}
    return PrepareResult(INFRASTRUCTURE_ERROR, Findings(), report, summary(report, None))


def fetched_identities(layout: ArtifactLayout) -> dict[str, str]:
    """Role → identity from the fetch step's `sources.json` ({} when no fetch step ran)."""
    try:
        fetched = FetchSummary.model_validate_json(layout.sources_json.read_text())
    except (OSError, ValueError):
        return {}
    return {s.role: s.identity for s in fetched.sources}


def run_prepare(config: ResolvedConfig) -> PrepareResult:
    """The Validating phase's work, before any GPU is requested."""
    layout = ArtifactLayout(config.paths.output)
    spec = config.spec
    findings = Findings()
    tokenizer = None
    t0 = time.perf_counter()
    try:
        tokenizer = load_tokenizer(config.paths.model, spec.model.chat_template)
    except TokenizerUnavailable as exc:
        tokenizer_finding(exc, findings)
    load_seconds = time.perf_counter() - t0
    model_config = str(Path(config.paths.model) / "config.json")
    limit = model_position_limit(config.paths.model, findings) if tokenizer is not None else None
    settings = settings_from_config(config, resolve_max_length(spec, limit, model_config, findings))
    try:
        outcome = check_datasets(sources_from_config(config), settings, tokenizer, findings, evaluation=spec.evaluation.enabled)
    except SourceUnavailable as exc:
        return _infrastructure_failure(f"cannot read a dataset: {exc}")
    outcome.timings["load_tokenizer"] = load_seconds
    model = _model_limits(config, limit, settings, outcome.longest_example, model_config, findings)
    model["digest"] = _model_digest(config.paths.model)
    ok = not findings.errors
    splits = outcome.splits
    train = splits["train"]
    message = _message(ok, outcome, model)
    hp = config.spec.hyperparameters
    estimate = None
    if train.encoded is not None:
        gpus = config.spec.resources.nodes * config.spec.resources.gpus_per_node
        estimate = cost_estimate(count_parameters(config.paths.model), train.encoded.tokens, hp.epochs, config.spec.adapter.type, settings.method, gpus)
    prepared_dir = None
    try:
        if ok and tokenizer is not None:
            t0 = time.perf_counter()
            inputs = {name: fingerprint(s.files) for name, s in splits.items()}
            digest = content_hash(inputs, tokenizer.fingerprint, settings.to_json())
            info = {
                "method": settings.method,
                "settings": settings.to_json(),
                "model": config.paths.model,
                "tokenizer": tokenizer.fingerprint,
                "splits": {name: _split_info(s, settings.method) for name, s in splits.items()},
            }
            prepared_dir = write_prepared(layout, digest, {name: _to_dataset(s) for name, s in splits.items()}, info)
            outcome.timings["write"] = time.perf_counter() - t0
        else:
            clear_pointer(layout)
        report = build_report(
            ok=ok, message=message, splits={n: s.to_json(settings.max_length) for n, s in splits.items()},
            findings=findings, leakage=outcome.leakage, estimate=estimate, settings=settings.to_json(),
            timings=outcome.timings, model=model,
        )
        if prepared_dir is not None:
            report["prepared"] = str(prepared_dir)
        report["sources"] = fetched_identities(layout)
        write_json_atomic(layout.data_report, report)
        layout.data_report.with_suffix(".md").write_text(render_markdown(report))
    except OSError as exc:
        return _infrastructure_failure(f"cannot write the prepared data under {layout.data}: {exc}")
    return PrepareResult(OK if ok else USER_ERROR, findings, report, summary(report, str(layout.data_report)), prepared_dir)


def _model_limits(
    config: ResolvedConfig, limit: PositionLimit | None, settings: CheckSettings, longest: int, where: str, findings: Findings
) -> dict[str, Any]:
    """The lengths later phases use (the report's `model` section): what the model takes, what the
    data needs, and the maxLength / maxModelLen resolved from both (resolving maxModelLen adds its
    finding: an explicit value beyond the positions, or a derived one the positions cut short)."""
    spec = config.spec
    return {
        "positions": limit.positions if limit else None,
        "positions_source": limit.source if limit else None,
        "max_length": settings.max_length,
        "max_length_source": "spec" if spec.datasets.max_length is not None else "default",
        "longest_example": longest,
        "max_model_len": resolve_max_model_len(spec, limit, longest, where, findings),
        "max_model_len_source": "spec" if spec.serving.max_model_len is not None else "derived",
    }


def _model_digest(model_dir: str) -> str | None:
    """The base model's content identity (its serving pool's key); None when it is not a local directory."""
    return tree_digest(model_dir) if Path(model_dir).is_dir() else None


def _message(ok: bool, outcome: CheckOutcome, model: dict[str, Any]) -> str:
    findings = outcome.findings
    train = outcome.splits["train"]
    dropped = sum(findings.count("dropped").values())
    if ok:
        lowered = any(f.rule is rules.CONTEXT_LENGTH for f in findings.warnings)
        limits = (f"; maxLength {model['max_length']}, maxModelLen {model['max_model_len']} "
                  f"(the base model takes {model['positions']} positions)") if lowered else ""
        return f"{len(train.kept)} training examples ready ({dropped} rows dropped, {len(findings.warnings)} warnings){limits}"
    errors = findings.count("error")
    top = ", ".join(f"{rid} {rules.RULES[rid].name} ×{n}" for rid, n in errors.most_common(3))
    first = findings.errors[0]
    return f"{sum(errors.values())} data errors ({top}); first: {first.file}:{first.line}: {first.message}"


def _split_info(result: SplitResult, method: str) -> dict[str, Any]:
    tokenized = result.source.purpose == "sft"
    columns = {
        "sft": ["input_ids", "assistant_masks"],
        "dpo": ["prompt", "chosen", "rejected"],
        "grpo": ["prompt", "reference", "row"],
        "eval": ["prompt", "reference", "row"],
    }[result.source.purpose]
    return {
        "rows": len(result.kept),
        "format": result.format,
        "purpose": result.source.purpose,
        "tokenized": tokenized,
        "columns": columns,
        "tokens": result.encoded.tokens if result.encoded else 0,
    }


def _messages(msgs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _to_dataset(result: SplitResult) -> Any:
    import datasets

    datasets.disable_progress_bars()
    purpose = result.source.purpose
    if purpose == "sft":
        enc = result.encoded
        assert enc is not None
        features = datasets.Features({
            "input_ids": datasets.List(datasets.Value("int32")),
            "assistant_masks": datasets.List(datasets.Value("int8")),
        })
        return datasets.Dataset.from_dict({"input_ids": enc.input_ids, "assistant_masks": enc.masks}, features=features)
    rows: list[dict[str, Any]] = []
    for ex in result.kept:
        if purpose == "dpo":
            rows.append({"prompt": _messages(ex.prompt), "chosen": _messages(ex.answer), "rejected": _messages(ex.rejected)})
        else:
            rows.append({"prompt": _messages(ex.prompt), "reference": ex.reference, "row": json.dumps(ex.raw, ensure_ascii=False)})
    return datasets.Dataset.from_list(rows)

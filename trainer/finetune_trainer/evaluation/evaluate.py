"""`run_evaluate`: generate with base and tuned, score every item, compare, gate, report.

User errors (bad grader, bad gate, missing or malformed eval set) raise `EvaluationUserError`
subclasses before any model is loaded; anything else is infrastructure. A failing gate is a verdict
(`passed: false`), not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_api.contract.artifacts import artifact_ref
from finetune_api.contract.summaries import EvaluateSummary
from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.vllm import JUDGE_ENDPOINT_ENV, JUDGE_MODEL_ENV, base_model_name, pooled_base_name
from finetune_api.job import REFUSAL_GRADER, GateResult
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..atomic_json import write_json_atomic
from .gates import HELD_OUT, REGRESSION, GateScope, GateVerdicts, check_gates
from .generate import (
    GenerationBackend,
    GenerationSettings,
    Side,
    TransformersBackend,
    encode_prompts,
    load_padded_tokenizer,
    open_backend,
    resolve_models,
)
from .graders import BaseGrader, GradeResult, GraderConfigError, JudgeDefaults, build_grader, default_refusal_grader
from .items import EvalDataError, EvalItem
from .metrics import CLASSIFICATION_METRICS, PER_ITEM, MetricTable, class_labels, mean_table, metric_tables
from .report import ItemRecord, SetResult, write_eval_report
from .stats import MetricSummary, summarize
from .suites import EvalSet, GateConfigError, eval_sets

EvaluationUserError = (EvalDataError, GraderConfigError, GateConfigError)


@dataclass
class EvaluateResult:
    """The verdict and what it rests on; `summary()` is the termination message."""

    passed: bool
    score: str
    sets: list[SetResult]
    """Held-out first, then the regression set and the suites."""
    verdicts: GateVerdicts
    report_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def held_out(self) -> SetResult:
        return self.sets[0]

    @property
    def gates(self) -> list[GateResult]:
        return self.verdicts.results

    def summary(self, output_root: str, generation: int | None = None) -> EvaluateSummary:
        """The termination message; the report's path is relative to `output_root`. Failing gates come
        first: a message over 4 KiB loses the tail of its lists, and the Rejected reason must keep them."""
        return EvaluateSummary(
            passed=self.passed,
            score=self.score,
            items=len(self.held_out.records),
            metrics=[m.to_result() for m in self.held_out.metrics.values()],
            gates=sorted(self.gates, key=lambda g: g.passed),
            report=artifact_ref(output_root, self.report_path) if self.report_path else None,
            evaluated_generation=generation,
        )


def headline(summaries: dict[str, MetricSummary], config: ResolvedConfig) -> str:
    """`<metric> <tuned> (base <base>)` for the first gated metric, else the first metric."""
    gated = [g.metric for g in config.spec.evaluation.gates if g.metric in summaries]
    name = (gated or list(summaries))[0] if summaries else None
    if name is None:
        return ""
    m = summaries[name]
    return f"{name} {m.tuned:.3g}" + (f" (base {m.base:.3g})" if m.base is not None else "")


def slice_of(fields: dict[str, Any], field_name: str) -> str | None:
    """The row's slice: its top-level `field_name` (`category`), else that key of its `metadata`."""
    metadata = fields.get("metadata")
    value = fields.get(field_name, metadata.get(field_name) if isinstance(metadata, dict) else None)
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def slice_rows(items: list[EvalItem], field_name: str) -> dict[str, list[int]]:
    """Item indices by slice (rows without one belong to no slice), sorted by slice."""
    rows: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        value = slice_of(item.fields, field_name)
        if value is not None:
            rows.setdefault(value, []).append(i)
    return dict(sorted(rows.items()))


class _Scorer:
    """Scores the outputs of one set with its built-in metrics and graders, on the whole and per slice."""

    def __init__(self, config: ResolvedConfig, graders: dict[str, BaseGrader]) -> None:
        self.ev = config.spec.evaluation
        self.seed = config.spec.hyperparameters.seed
        self.graders = graders

    def _summaries(self, tables: dict[Side, dict[str, MetricTable]], thresholds: dict[str, float]) -> dict[str, MetricSummary]:
        return {
            name: summarize(tables["tuned"][name], tables.get("base", {}).get(name), self.ev.bootstrap_samples,
                            self.ev.confidence_level, self.seed, thresholds.get(name, 0.5))
            for name in tables["tuned"]
        }

    def score(self, eval_set: EvalSet, outputs: dict[Side, list[str]]) -> SetResult:
        items, names = eval_set.items, eval_set.metrics
        graders = [self.graders[n] for n in eval_set.graders]
        references = [it.reference for it in items]
        labels = class_labels(references) if {"classification", *CLASSIFICATION_METRICS} & set(names) else []
        tables = {side: metric_tables(names, outs, references, labels) for side, outs in outputs.items()}
        grades: dict[Side, dict[str, list[GradeResult]]] = {}
        for side, outs in outputs.items():
            grades[side] = {g.name: g.grade_batch(outs, [it.fields for it in items]) for g in graders}
            for g in graders:
                tables[side][g.name] = mean_table(g.name, [r.score for r in grades[side][g.name]])
        thresholds = {g.name: g.spec.pass_threshold for g in graders}
        slices = slice_rows(items, self.ev.slice_by)
        records = [
            ItemRecord(
                index=i, origin=item.origin, prompt=item.prompt, reference=item.reference,
                outputs={side: outs[i] for side, outs in outputs.items()},
                scores={side: {n: float(t.per_item[i]) for n, t in tables[side].items() if n in PER_ITEM or n in thresholds}
                        for side in outputs},
                errors={side: {n: r[i].error for n, r in grades[side].items() if r[i].error} for side in outputs},
                slice=slice_of(item.fields, self.ev.slice_by),
            )
            for i, item in enumerate(items)
        ]
        by_slice = {
            value: self._summaries({side: {n: t.subset(rows) for n, t in ts.items()} for side, ts in tables.items()}, thresholds)
            for value, rows in slices.items()
        }
        return SetResult(eval_set.name, eval_set.kind, eval_set.source, self._summaries(tables, thresholds), records,
                         labels, by_slice)


class BaseOutputCache:
    """The base model's outputs for exactly these prompts and settings, stored next to the report.

    The base does not change during training, so the baseline evaluation (before training) generates
    them once and the final evaluation reuses them: base scores show early, and the base model is
    not run twice. The key covers the model, template, prompts and generation settings.
    """

    def __init__(self, path: Path, pair: Any, settings: GenerationSettings, prompt_sets: list[list[list[int]]]) -> None:
        self.path = path
        material = json.dumps([pair.base_dir, pair.base_name, pair.dtype, pair.chat_template, asdict(settings), prompt_sets])
        self.key = hashlib.sha256(material.encode()).hexdigest()

    def load(self) -> list[list[str]] | None:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return stored["outputs"] if stored.get("key") == self.key else None

    def save(self, outputs: list[list[str]]) -> None:
        write_json_atomic(self.path, {"key": self.key, "outputs": outputs}, indent=None, default=None)


class _ItemProgress:
    """Answers generated so far, printed as progress events (`unit: item`) about ten times per phase, so
    `ftctl run` shows the baseline and the evaluation moving. Chunks stay large enough for a batching
    backend to fill its batches."""

    MIN_CHUNK = 32

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.size = max(self.MIN_CHUNK, -(-total // 10))

    def chunks(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        return [prompts[i:i + self.size] for i in range(0, len(prompts), self.size)] or [[]]

    def advance(self, count: int) -> None:
        self.done += count
        if count:
            print(ProgressEvent(step=self.done, total_steps=self.total, unit="item").to_line(), flush=True)


def _generate_all(
    backend: GenerationBackend, sides: list[Side], prompt_sets: list[list[list[int]]], timings: dict[str, float],
    cache: BaseOutputCache | None = None,
) -> list[dict[Side, list[str]]]:
    """Outputs per set and side; each side runs all its sets before the next side (one model load).
    The base side comes from `cache` when it holds outputs for these prompts, and is stored there."""
    results: list[dict[Side, list[str]]] = [{} for _ in prompt_sets]
    cached = cache.load() if cache is not None and "base" in sides else None
    counter = _ItemProgress(sum(len(p) for p in prompt_sets) * sum(1 for s in sides if s != "base" or cached is None))
    for side in sides:
        if side == "base" and cached is not None:
            for out, outputs in zip(results, cached):
                out[side] = outputs
            timings["generate_base_cached"] = 0.0
            continue
        started = time.perf_counter()
        for out, prompts in zip(results, prompt_sets):
            out[side] = []
            for chunk in counter.chunks(prompts):
                out[side] += backend.generate(chunk, side)
                counter.advance(len(chunk))
        timings[f"generate_{side}"] = time.perf_counter() - started
        if cache is not None and side == "base":
            cache.save([out[side] for out in results])
    return results


def _prompt_sets(tokenizer: Any, sets: list[EvalSet]) -> list[list[list[int]]]:
    """Token ids of every set's prompts, in set order (the base-output cache's key covers them)."""
    return [encode_prompts(tokenizer, [it.prompt for it in s.items]) for s in sets]


def judge_defaults(config: ResolvedConfig) -> JudgeDefaults:
    """Where a `score_model` grader without `endpoint` asks: the server the evaluation generates through
    (`ftctl run`: it serves the base), else on a cluster the adapter pool serving the base, which the
    operator names in the environment (`JUDGE_ENDPOINT_ENV`)."""
    pool = os.environ.get(JUDGE_ENDPOINT_ENV)
    if config.vllm_url is None and pool:
        return JudgeDefaults(pool, os.environ.get(JUDGE_MODEL_ENV) or pooled_base_name(config.spec))
    return JudgeDefaults(config.vllm_url, base_model_name(config.spec, config.job))


def _build_graders(config: ResolvedConfig, sets: list[EvalSet]) -> dict[str, BaseGrader]:
    """Every grader some set uses, by name; the shipped `refusal` unless the spec declares its own."""
    ev = config.spec.evaluation
    specs = {g.name: g for g in ev.graders}
    used = {name for s in sets for name in s.graders}
    if REFUSAL_GRADER in used and REFUSAL_GRADER not in specs:
        specs[REFUSAL_GRADER] = default_refusal_grader()
    built: dict[str, BaseGrader] = {}
    try:
        judge = judge_defaults(config)
        for name in sorted(used):
            built[name] = build_grader(specs[name], ev.graders, judge=judge)
    except Exception:
        for grader in built.values():
            grader.close()
        raise
    return built


def _gate_scopes(sets: list[EvalSet], results: list[SetResult]) -> list[GateScope]:
    """Every gate with the sets it reads: held-out gates read the regression set for maxRegression."""
    regression = next((r for r in results if r.name == REGRESSION), None)
    return [
        GateScope(s.name, gate, result, regression if s.name == HELD_OUT else None)
        for s, result in zip(sets, results) for gate in s.gates
    ]


def run_baseline(config: ResolvedConfig) -> dict[str, float]:
    """Generate with the base model before training (cached for the final evaluation); returns the
    base's mean per built-in metric on the held-out set."""
    ev = config.spec.evaluation
    sets = eval_sets(config)
    metric_names = [m for m in sets[0].metrics if m in PER_ITEM]
    pair = resolve_models(config, need_tuned=False)
    settings = GenerationSettings.from_config(config)
    tokenizer = load_padded_tokenizer(pair.base_dir, pair.chat_template)
    prompt_sets = _prompt_sets(tokenizer, sets)
    cache = BaseOutputCache(ArtifactLayout(config.paths.output).base_outputs, pair, settings, prompt_sets)
    backend = open_backend(config, pair, settings, ev.backend, tokenizer)
    try:
        outputs = _generate_all(backend, ["base"], prompt_sets, {}, cache)
    finally:
        backend.close()
    references = [it.reference for it in sets[0].items]
    tables = metric_tables(metric_names, outputs[0]["base"], references, [])
    return {name: table.value() for name, table in tables.items()}


def run_evaluate(config: ResolvedConfig, backend: GenerationBackend | str | None = None) -> EvaluateResult:
    """Evaluate the tuned model (and its base) on every set and decide the gates; writes
    eval/report.{json,md}.

    `backend` is a backend object to reuse, or a name overriding `spec.evaluation.backend`.
    """
    ev = config.spec.evaluation
    sets = eval_sets(config)
    graders = _build_graders(config, sets)
    timings: dict[str, float] = {}
    notes: list[str] = []
    try:
        pair = resolve_models(config)
        settings = GenerationSettings.from_config(config)
        tokenizer = load_padded_tokenizer(pair.base_dir, pair.chat_template)
        prompt_sets = _prompt_sets(tokenizer, sets)
        sides: list[Side] = ["base", "tuned"] if ev.compare_to_base else ["tuned"]
        cache = BaseOutputCache(ArtifactLayout(config.paths.output).base_outputs, pair, settings, prompt_sets)
        chosen = backend if backend is not None and not isinstance(backend, str) else None
        choice = backend if isinstance(backend, str) else ev.backend
        active = chosen or open_backend(config, pair, settings, choice, tokenizer)
        try:
            outputs = _generate_all(active, sides, prompt_sets, timings, cache)
        except RuntimeError as exc:
            if chosen is not None or choice != "auto" or active.name != "vllm":
                raise
            active.close()
            notes.append(f"vLLM unavailable ({str(exc).splitlines()[0]}); used transformers")
            active = TransformersBackend(pair, settings, tokenizer)
            outputs = _generate_all(active, sides, prompt_sets, timings, cache)
        finally:
            if chosen is None:
                active.close()
        started = time.perf_counter()
        scorer = _Scorer(config, graders)
        results = [scorer.score(s, out) for s, out in zip(sets, outputs)]
        timings["score"] = time.perf_counter() - started
    finally:
        for g in graders.values():
            g.close()
    verdicts = check_gates(_gate_scopes(sets, results), ev.confidence_level, ev.correction)
    result = EvaluateResult(
        passed=all(g.passed for g in verdicts.results), score=headline(results[0].metrics, config), sets=results,
        verdicts=verdicts, notes=notes,
    )
    result.report_path = write_eval_report(
        ArtifactLayout(config.paths.output), result, config,
        {"backend": active.name, "pair": pair, "settings": settings, "timings": timings},
    )
    return result

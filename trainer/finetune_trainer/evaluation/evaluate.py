"""`run_evaluate`: generate with base and tuned, score every item, compare, gate, report.

User errors (bad grader, bad gate, missing or malformed eval set) raise `EvaluationUserError`
subclasses before any model is loaded; anything else is infrastructure. A failing gate is a verdict
(`passed: false`), not an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_api.contract.artifacts import artifact_ref
from finetune_api.contract.summaries import EvaluateSummary
from finetune_api.job import GateResult
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..atomic_json import write_json_atomic
from .gates import check_gates
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
from .graders import BaseGrader, GradeResult, GraderConfigError, build_grader
from .items import EvalDataError, EvalItem, held_out_items, regression_items
from .metrics import CLASSIFICATION_METRICS, PER_ITEM, class_labels, mean_table, metric_tables
from .report import ItemRecord, SetResult, write_eval_report
from .stats import MetricSummary, summarize

BUILTIN_GATE_METRICS = frozenset({*PER_ITEM, *CLASSIFICATION_METRICS})


class GateConfigError(ValueError):
    """A gate that cannot be evaluated as written."""


EvaluationUserError = (EvalDataError, GraderConfigError, GateConfigError)


@dataclass
class EvaluateResult:
    """The verdict and what it rests on; `summary()` is the termination message."""

    passed: bool
    score: str
    held_out: SetResult
    gates: list[GateResult]
    regression: SetResult | None = None
    report_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, output_root: str, generation: int | None = None) -> EvaluateSummary:
        """The termination message; the report's path is relative to `output_root`."""
        return EvaluateSummary(
            passed=self.passed,
            score=self.score,
            items=len(self.held_out.records),
            metrics=[m.to_result() for m in self.held_out.metrics.values()],
            gates=self.gates,
            report=artifact_ref(output_root, self.report_path) if self.report_path else None,
            evaluated_generation=generation,
        )


def _metric_names(config: ResolvedConfig) -> list[str]:
    names: list[str] = list(dict.fromkeys(config.spec.evaluation.metrics))
    graders = {g.name for g in config.spec.evaluation.graders}
    for i, gate in enumerate(config.spec.evaluation.gates):
        if gate.metric in graders:
            continue
        if gate.metric not in BUILTIN_GATE_METRICS:
            raise GateConfigError(f"spec.evaluation.gates[{i}].metric: {gate.metric!r} is neither a built-in metric nor a grader")
        wanted = "classification" if gate.metric in CLASSIFICATION_METRICS else gate.metric
        if wanted not in names:
            names.append(wanted)
        if gate.max_regression is not None and config.spec.evaluation.regression is None:
            raise GateConfigError(f"spec.evaluation.gates[{i}].maxRegression: needs spec.evaluation.regression (a regression set)")
    return names


def headline(summaries: dict[str, MetricSummary], config: ResolvedConfig) -> str:
    """`<metric> <tuned> (base <base>)` for the first gated metric, else the first metric."""
    gated = [g.metric for g in config.spec.evaluation.gates if g.metric in summaries]
    name = (gated or list(summaries))[0] if summaries else None
    if name is None:
        return ""
    m = summaries[name]
    return f"{name} {m.tuned:.3g}" + (f" (base {m.base:.3g})" if m.base is not None else "")


class _Scorer:
    """Scores outputs of one item set with the built-in metrics and the graders."""

    def __init__(self, config: ResolvedConfig, graders: list[BaseGrader], metric_names: list[str]) -> None:
        self.ev = config.spec.evaluation
        self.seed = config.spec.hyperparameters.seed
        self.graders, self.metric_names = graders, metric_names

    def score(self, items: list[EvalItem], outputs: dict[Side, list[str]]) -> SetResult:
        references = [it.reference for it in items]
        labels = class_labels(references) if {"classification", *CLASSIFICATION_METRICS} & set(self.metric_names) else []
        tables = {side: metric_tables(self.metric_names, outs, references, labels) for side, outs in outputs.items()}
        grades: dict[Side, dict[str, list[GradeResult]]] = {}
        for side, outs in outputs.items():
            grades[side] = {g.name: g.grade_batch(outs, [it.fields for it in items]) for g in self.graders}
            for g in self.graders:
                tables[side][g.name] = mean_table(g.name, [r.score for r in grades[side][g.name]])
        thresholds = {g.name: g.spec.pass_threshold for g in self.graders}
        summaries = {
            name: summarize(tables["tuned"][name], tables.get("base", {}).get(name), self.ev.bootstrap_samples,
                            self.ev.confidence_level, self.seed, thresholds.get(name, 0.5))
            for name in tables["tuned"]
        }
        records = [
            ItemRecord(
                index=i, origin=item.origin, prompt=item.prompt, reference=item.reference,
                outputs={side: outs[i] for side, outs in outputs.items()},
                scores={side: {n: float(t.per_item[i]) for n, t in tables[side].items() if n in PER_ITEM or n in thresholds}
                        for side in outputs},
                errors={side: {n: r[i].error for n, r in grades[side].items() if r[i].error} for side in outputs},
            )
            for i, item in enumerate(items)
        ]
        return SetResult(summaries, records, labels)


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


def _generate_all(
    backend: GenerationBackend, sides: list[Side], prompt_sets: list[list[list[int]]], timings: dict[str, float],
    cache: BaseOutputCache | None = None,
) -> list[dict[Side, list[str]]]:
    """Outputs per set and side; each side runs all its sets before the next side (one model load).
    The base side comes from `cache` when it holds outputs for these prompts, and is stored there."""
    results: list[dict[Side, list[str]]] = [{} for _ in prompt_sets]
    for side in sides:
        cached = cache.load() if cache is not None and side == "base" else None
        if cached is not None:
            for out, outputs in zip(results, cached):
                out[side] = outputs
            timings["generate_base_cached"] = 0.0
            continue
        started = time.perf_counter()
        for out, prompts in zip(results, prompt_sets):
            out[side] = backend.generate(prompts, side)
        timings[f"generate_{side}"] = time.perf_counter() - started
        if cache is not None and side == "base":
            cache.save([out[side] for out in results])
    return results


def _prompt_sets(tokenizer: Any, items: list[EvalItem], regression: list[EvalItem] | None) -> list[list[list[int]]]:
    """Token ids of the held-out prompts, then of the regression prompts when there is a set."""
    sets = [encode_prompts(tokenizer, [it.prompt for it in items])]
    if regression:
        sets.append(encode_prompts(tokenizer, [it.prompt for it in regression]))
    return sets


def run_baseline(config: ResolvedConfig) -> dict[str, float]:
    """Generate with the base model before training (cached for the final evaluation); returns the
    base's mean per built-in metric on the held-out set."""
    ev = config.spec.evaluation
    metric_names = [m for m in _metric_names(config) if m in PER_ITEM]
    items, _ = held_out_items(config)
    pair = resolve_models(config, need_tuned=False)
    settings = GenerationSettings.from_config(config)
    tokenizer = load_padded_tokenizer(pair.base_dir, pair.chat_template)
    prompt_sets = _prompt_sets(tokenizer, items, regression_items(config))
    cache = BaseOutputCache(ArtifactLayout(config.paths.output).base_outputs, pair, settings, prompt_sets)
    backend = open_backend(config, pair, settings, ev.backend, tokenizer)
    try:
        outputs = _generate_all(backend, ["base"], prompt_sets, {}, cache)
    finally:
        backend.close()
    references = [it.reference for it in items]
    tables = metric_tables(metric_names, outputs[0]["base"], references, [])
    return {name: table.value() for name, table in tables.items()}


def run_evaluate(config: ResolvedConfig, backend: GenerationBackend | str | None = None) -> EvaluateResult:
    """Evaluate the tuned model (and its base) and decide the gates; writes eval/report.{json,md}.

    `backend` is a backend object to reuse, or a name overriding `spec.evaluation.backend`.
    """
    ev = config.spec.evaluation
    metric_names = _metric_names(config)
    items, source = held_out_items(config)
    regression = regression_items(config)
    graders = [build_grader(g, ev.graders) for g in ev.graders]
    pair = resolve_models(config)
    settings = GenerationSettings.from_config(config)
    timings: dict[str, float] = {}
    notes: list[str] = []
    try:
        tokenizer = load_padded_tokenizer(pair.base_dir, pair.chat_template)
        prompt_sets = _prompt_sets(tokenizer, items, regression)
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
        scorer = _Scorer(config, graders, metric_names)
        held_out = scorer.score(items, outputs[0])
        reg = scorer.score(regression, outputs[1]) if regression else None
        timings["score"] = time.perf_counter() - started
    finally:
        for g in graders:
            g.close()
    gates = check_gates(ev.gates, held_out.metrics, reg.metrics if reg else None)
    result = EvaluateResult(
        passed=all(g.passed for g in gates), score=headline(held_out.metrics, config), held_out=held_out,
        gates=gates, regression=reg, notes=notes,
    )
    result.report_path = write_eval_report(
        ArtifactLayout(config.paths.output), result, config,
        {"backend": active.name, "source": source, "pair": pair, "settings": settings, "timings": timings},
    )
    return result

"""`eval/report.json` (per-item results, aggregates, gates) and `eval/report.md` (for people).

The top level of report.json carries the same keys as the termination message (`passed`, `score`,
`items`, `metrics`, `gates`), untruncated, so `ftctl run` and the operator read one shape; those
describe the held-out set. `suites` holds every other set (the regression set and `evaluation.suites`)
in the same shape, each with per-slice metrics; `statistics` states the test, the correction and the
power behind every number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..atomic_json import write_json_atomic
from .stats import POWER, TEST_DESCRIPTION, MetricSummary

if TYPE_CHECKING:
    from .evaluate import EvaluateResult


@dataclass
class ItemRecord:
    """One item: what both models said and how each metric and grader scored it."""

    index: int
    origin: str
    prompt: list[dict[str, Any]]
    reference: str
    outputs: dict[str, str]
    scores: dict[str, dict[str, float]]
    errors: dict[str, dict[str, str | None]]
    slice: Any = None
    """The item's value of `evaluation.sliceBy`, when it has one."""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "origin": self.origin, "prompt": self.prompt, "reference": self.reference,
            "slice": self.slice,
            **{side: {"output": out, "scores": self.scores[side], "graderErrors": self.errors[side]}
               for side, out in self.outputs.items()},
        }


@dataclass
class SetResult:
    """Aggregates and per-item records of one evaluation set, on the whole and per slice."""

    name: str
    kind: str
    source: str
    metrics: dict[str, MetricSummary]
    records: list[ItemRecord]
    labels: list[str]
    slices: dict[str, dict[str, MetricSummary]] = field(default_factory=dict)

    def grader_errors(self) -> int:
        return sum(len(errs) for r in self.records for errs in r.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "items": len(self.records),
            "metrics": [m.to_json() for m in self.metrics.values()],
            "slices": [
                {"slice": value, "items": next(iter(table.values())).items if table else 0,
                 "metrics": [m.to_json() for m in table.values()]}
                for value, table in self.slices.items()
            ],
            "labels": self.labels,
            "graderErrors": self.grader_errors(),
            "results": [r.to_json() for r in self.records],
        }


def report_json(result: EvaluateResult, config: ResolvedConfig, run: dict[str, Any]) -> dict[str, Any]:
    ev = config.spec.evaluation
    held = result.held_out.to_json()
    return {
        "passed": result.passed,
        "score": result.score,
        "items": held["items"],
        "metrics": held["metrics"],
        "slices": held["slices"],
        "gates": [g.to_api() for g in result.gates],
        "graderErrors": held["graderErrors"],
        "labels": held["labels"],
        "notes": result.notes,
        "job": config.job,
        "generation": config.generation,
        "backend": run["backend"],
        "source": held["source"],
        "models": {"base": run["pair"].base_dir, "tuned": run["pair"].tuned_dir, "tunedIsAdapter": run["pair"].tuned_is_adapter},
        "settings": {
            **dataclasses.asdict(run["settings"]), "bootstrapSamples": ev.bootstrap_samples,
            "confidenceLevel": ev.confidence_level, "compareToBase": ev.compare_to_base, "sliceBy": ev.slice_by,
        },
        "statistics": {
            "test": TEST_DESCRIPTION,
            "correction": result.verdicts.correction,
            "gateTests": result.verdicts.tests,
            "statement": result.verdicts.statement(),
            "minDetectableDifference": f"two-sided at {ev.confidence_level:.0%}, {POWER:.0%} power, from the spread of "
                                       "the per-item differences",
        },
        "timings": run["timings"],
        "results": held["results"],
        "suites": [s.to_json() for s in result.sets[1:]],
    }


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _metric_table(metrics: list[dict[str, Any]], first_column: str = "metric") -> list[str]:
    lines = [
        f"| {first_column} | items | base | tuned | delta | CI | P(tuned > base) | min. detectable | wins / losses / ties | flips +/− |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in metrics:
        ci = f"[{_num(m.get('ciLow'))}, {_num(m.get('ciHigh'))}]"
        wlt = f"{m['wins']} / {m['losses']} / {m['ties']}" if "wins" in m else "–"
        flips = f"{m['flipsToPass']} / {m['flipsToFail']}" if "flipsToPass" in m else "–"
        label = m.get("label", m["name"])
        lines.append(f"| {label} | {m.get('items', '–')} | {_num(m.get('base'))} | {_num(m['tuned'])} | {_num(m.get('delta'))} | "
                     f"{ci} | {_num(m.get('pBetter'))} | {_num(m.get('minDetectableDifference'))} | {wlt} | {flips} |")
    return lines


def _set_section(title: str, data: dict[str, Any], slice_by: str) -> list[str]:
    """One set's metric table, then one table per metric across the slices."""
    lines = ["", f"## {title}", "", f"{data['items']} items from {data['source']}.", "", *_metric_table(data["metrics"])]
    if data["slices"]:
        lines += ["", f"### By {slice_by}"]
        for metric in data["metrics"]:
            rows = [{**m, "label": s["slice"]} for s in data["slices"] for m in s["metrics"] if m["name"] == metric["name"]]
            lines += ["", f"{metric['name']}:", "", *_metric_table(rows, slice_by)]
    if data["graderErrors"]:
        lines += ["", f"{data['graderErrors']} grader errors (per item in report.json)."]
    return lines


def _escape(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def render_markdown(report: dict[str, Any], examples: int = 10) -> str:
    """The report for people: verdict, gates, statistics, every set (per slice), and the first items
    where base and tuned differ."""
    verdict = "PASSED" if report["passed"] else "REJECTED"
    settings, stats = report["settings"], report["statistics"]
    slice_by = settings["sliceBy"]
    lines = [
        f"# Evaluation of {report['job']} (generation {report['generation']}): {verdict}",
        "",
        f"Backend {report['backend']}; "
        f"{'greedy' if settings['temperature'] == 0 else 'temperature ' + str(settings['temperature'])}, "
        f"max {settings['max_new_tokens']} new tokens.",
        "",
        "## Gates",
        "",
    ]
    lines += [f"- {'PASS' if g['passed'] else 'FAIL'} {g['message']}" for g in report["gates"]] or ["- no gates"]
    lines += [
        "", "## Statistics", "",
        f"- Test: {stats['test']}; {settings['bootstrapSamples']} resamples, {settings['confidenceLevel']:.0%} intervals.",
        f"- {stats['statement']}",
        f"- Minimum detectable difference (column \"min. detectable\"): {stats['minDetectableDifference']}; a set "
        "whose difference is below it is too small to decide.",
    ]
    held = {"items": report["items"], "source": report["source"], "metrics": report["metrics"],
            "slices": report["slices"], "graderErrors": report["graderErrors"]}
    lines += _set_section("Held-out set", held, slice_by)
    for suite in report["suites"]:
        lines += _set_section(f"Suite {suite['name']} ({suite['kind']})", suite, slice_by)
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    differing = [r for r in report["results"] if "base" in r and r["base"]["output"] != r["tuned"]["output"]]
    if differing:
        lines += ["", "## Items where base and tuned differ", "", "| # | reference | base | tuned |", "| --- | --- | --- | --- |"]
        for r in differing[:examples]:
            lines.append(f"| {r['index']} | {_escape(r['reference'])} | {_escape(r['base']['output'])} | {_escape(r['tuned']['output'])} |")
    return "\n".join(lines) + "\n"


def write_eval_report(layout: ArtifactLayout, result: EvaluateResult, config: ResolvedConfig, run: dict[str, Any]) -> Path:
    """Write eval/report.json and eval/report.md; the JSON path."""
    report = report_json(result, config, run)
    write_json_atomic(layout.eval_report, report)
    layout.eval_report.with_suffix(".md").write_text(render_markdown(report))
    return layout.eval_report

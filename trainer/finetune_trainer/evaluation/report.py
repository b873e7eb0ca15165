"""`eval/report.json` (per-item results, aggregates, gates) and `eval/report.md` (for people).

The top level of report.json carries the same keys as the termination message (`passed`, `score`,
`items`, `metrics`, `gates`), untruncated, so `ftctl run` and the operator read one shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..atomic_json import write_json_atomic
from .stats import MetricSummary

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

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "origin": self.origin, "prompt": self.prompt, "reference": self.reference,
            **{side: {"output": out, "scores": self.scores[side], "graderErrors": self.errors[side]}
               for side, out in self.outputs.items()},
        }


@dataclass
class SetResult:
    """Aggregates and per-item records of one item set (held-out or regression)."""

    metrics: dict[str, MetricSummary]
    records: list[ItemRecord]
    labels: list[str]

    def grader_errors(self) -> int:
        return sum(len(errs) for r in self.records for errs in r.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "items": len(self.records),
            "metrics": [m.to_json() for m in self.metrics.values()],
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
        "gates": [g.to_api() for g in result.gates],
        "graderErrors": held["graderErrors"],
        "labels": held["labels"],
        "notes": result.notes,
        "job": config.job,
        "generation": config.generation,
        "backend": run["backend"],
        "source": run["source"],
        "models": {"base": run["pair"].base_dir, "tuned": run["pair"].tuned_dir, "tunedIsAdapter": run["pair"].tuned_is_adapter},
        "settings": {
            **dataclasses.asdict(run["settings"]), "bootstrapSamples": ev.bootstrap_samples,
            "confidenceLevel": ev.confidence_level, "compareToBase": ev.compare_to_base,
        },
        "timings": run["timings"],
        "results": held["results"],
        "regression": result.regression.to_json() if result.regression else None,
    }


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _metric_table(metrics: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| metric | base | tuned | delta | CI of delta | P(tuned > base) | wins / losses / ties | flips +/− |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in metrics:
        ci = f"[{_num(m.get('ciLow'))}, {_num(m.get('ciHigh'))}]"
        wlt = f"{m['wins']} / {m['losses']} / {m['ties']}" if "wins" in m else "–"
        flips = f"{m['flipsToPass']} / {m['flipsToFail']}" if "flipsToPass" in m else "–"
        lines.append(f"| {m['name']} | {_num(m.get('base'))} | {_num(m['tuned'])} | {_num(m.get('delta'))} | {ci} | "
                     f"{_num(m.get('pBetter'))} | {wlt} | {flips} |")
    return lines


def _escape(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def render_markdown(report: dict[str, Any], examples: int = 10) -> str:
    """The report for people: verdict, gates, metrics, regression, and the first differing items."""
    verdict = "PASSED" if report["passed"] else "REJECTED"
    settings = report["settings"]
    lines = [
        f"# Evaluation of {report['job']} (generation {report['generation']}): {verdict}",
        "",
        f"{report['items']} held-out items from {report['source']}; backend {report['backend']}; "
        f"{'greedy' if settings['temperature'] == 0 else 'temperature ' + str(settings['temperature'])}, "
        f"max {settings['max_new_tokens']} new tokens; bootstrap {settings['bootstrapSamples']} resamples, "
        f"{settings['confidenceLevel']:.0%} intervals.",
        "",
        "## Gates",
        "",
    ]
    lines += [f"- {'PASS' if g['passed'] else 'FAIL'} {g['message']}" for g in report["gates"]] or ["- no gates"]
    lines += ["", "## Held-out set", "", *_metric_table(report["metrics"])]
    if report["graderErrors"]:
        lines += ["", f"{report['graderErrors']} grader errors (per item in report.json)."]
    if report["regression"]:
        lines += ["", f"## Regression set ({report['regression']['items']} items)", "", *_metric_table(report["regression"]["metrics"])]
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

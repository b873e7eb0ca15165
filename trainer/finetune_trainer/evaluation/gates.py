"""Promotion gates: the spec's bounds checked against the measured metrics, one GateResult per gate.

`min`, `minImprovementOverBase` and `minConfidence` read the held-out set; `maxRegression` reads the
regression set. Every message names the metric and the numbers, so a Rejected job says why.
"""

from __future__ import annotations

from finetune_api.job import Gate, GateResult

from .stats import MetricSummary


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def check_gate(gate: Gate, held_out: MetricSummary | None, regression: MetricSummary | None) -> GateResult:
    """The verdict of one gate; every bound it sets must hold."""
    name = gate.metric
    if held_out is None:
        return GateResult(metric=name, passed=False, message=f"{name}: not measured on the held-out set")
    checks: list[tuple[bool, str]] = []
    if gate.min is not None:
        ok = held_out.tuned >= gate.min
        checks.append((ok, f"tuned {_fmt(held_out.tuned)} {'≥' if ok else '<'} min {_fmt(gate.min)}"))
    if gate.min_improvement_over_base is not None:
        if held_out.base is None:
            checks.append((False, "minImprovementOverBase needs the base (evaluation.compareToBase)"))
        else:
            delta = held_out.tuned - held_out.base
            ok = delta >= gate.min_improvement_over_base
            checks.append((ok, f"tuned−base {delta:+.3f} (base {_fmt(held_out.base)}) {'≥' if ok else '<'} "
                               f"minImprovementOverBase {_fmt(gate.min_improvement_over_base)}"))
    if gate.min_confidence is not None:
        if held_out.paired is None:
            checks.append((False, "minConfidence needs the base (evaluation.compareToBase)"))
        else:
            p = held_out.paired.p_better
            ok = p >= gate.min_confidence
            checks.append((ok, f"P(tuned>base) {_fmt(p)} {'≥' if ok else '<'} minConfidence {_fmt(gate.min_confidence)}"))
    if gate.max_regression is not None:
        if regression is None or regression.base is None:
            checks.append((False, "maxRegression needs a regression set evaluated against the base"))
        else:
            drop = regression.base - regression.tuned
            ok = drop <= gate.max_regression
            checks.append((ok, f"regression-set drop {drop:+.3f} (base {_fmt(regression.base)}, tuned "
                               f"{_fmt(regression.tuned)}) {'≤' if ok else '>'} maxRegression {_fmt(gate.max_regression)}"))
    passed = all(ok for ok, _ in checks)
    failing = [text for ok, text in checks if not ok]
    shown = failing if failing else [text for _, text in checks]
    return GateResult(metric=name, passed=passed, message=f"{name}: " + "; ".join(shown))


def check_gates(
    gates: list[Gate], held_out: dict[str, MetricSummary], regression: dict[str, MetricSummary] | None = None
) -> list[GateResult]:
    """Every gate's verdict, in spec order."""
    regression = regression or {}
    return [check_gate(g, held_out.get(g.metric), regression.get(g.metric)) for g in gates]

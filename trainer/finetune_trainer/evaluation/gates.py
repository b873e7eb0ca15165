"""Promotion gates: the spec's bounds checked against the measured metrics, one GateResult per gate.

A gate reads one evaluation set (its scope): `evaluation.gates` read the held-out set, except
`maxRegression`, which reads the regression set; a suite's gates read that suite. A `perSlice` gate
checks its bounds on the whole set and on every slice.

Bounds against the base that are tests (`minConfidence`, and `useConfidenceBound` bounds) each give a
one-sided bootstrap p-value; all of a job's tests form one family, corrected by Holm–Bonferroni unless
`evaluation.correction` is `none`. Every message names the set, the metric and the numbers, so a
Rejected job says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from finetune_api.job import Gate, GateResult

from .stats import MetricSummary, holm

HELD_OUT = "held-out"
REGRESSION = "regression"


class Measured(Protocol):
    """An evaluated set: metric summaries on the whole set and per slice."""

    metrics: dict[str, MetricSummary]
    slices: dict[str, dict[str, MetricSummary]]


@dataclass
class GateScope:
    """One gate and the sets it reads: `measured` for every bound, `regression` for `maxRegression`
    of a held-out gate (a suite's gate reads its own set for that too)."""

    suite: str
    gate: Gate
    measured: Measured | None
    regression: Measured | None = None


@dataclass
class _Check:
    """One bound on one (slice of a) set: decided at once, or a test decided after the correction."""

    where: str
    ok: bool | None = None
    text: str = ""
    p_value: float | None = None
    alpha: float = 0.0
    describe: Callable[[bool, str, bool], str] | None = None
    """For a test: the message, given the verdict, the p-value's text and whether it is the only test."""


@dataclass
class GateVerdicts:
    """Every gate's verdict and how the tests among them were corrected."""

    results: list[GateResult]
    tests: int
    correction: Literal["holm", "none"]
    notes: list[str] = field(default_factory=list)

    def statement(self) -> str:
        """One sentence for the report: the correction applied, or that there was none."""
        if self.tests == 0:
            return "No gate tests tuned against base, so no multiple-comparison correction applies."
        if self.correction == "none" and self.tests > 1:
            return f"{self.tests} gate tests, NOT corrected for multiple comparisons (evaluation.correction: none)."
        if self.tests == 1:
            return "1 gate test; no multiple-comparison correction needed."
        return f"{self.tests} gate tests, Holm–Bonferroni corrected (family-wise error at each gate's level)."


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _bounds(gate: Gate, where: str, held: MetricSummary | None, regression: MetricSummary | None,
            alpha: float, regression_label: str) -> list[_Check]:
    """The checks of every bound `gate` sets, on one set (or slice of it)."""
    checks: list[_Check] = []
    if held is None and (gate.min is not None or gate.min_improvement_over_base is not None or gate.min_confidence is not None):
        return [_Check(where, False, "not measured")]
    if gate.min is not None and held is not None:
        ok = held.tuned >= gate.min
        checks.append(_Check(where, ok, f"tuned {_fmt(held.tuned)} {'≥' if ok else '<'} min {_fmt(gate.min)}"))
    if gate.min_improvement_over_base is not None and held is not None:
        threshold = gate.min_improvement_over_base
        if held.base is None or held.paired is None:
            checks.append(_Check(where, False, "minImprovementOverBase needs the base (evaluation.compareToBase)"))
        elif gate.use_confidence_bound:
            improvement, held_base = held.paired, held.base
            checks.append(_Check(
                where, p_value=improvement.p_at_most(threshold), alpha=alpha,
                describe=lambda ok, p, _: (
                    f"lower {1 - alpha:.0%} bound of tuned−base {improvement.lower_bound(alpha):+.3f} (estimate "
                    f"{improvement.delta:+.3f}, base {_fmt(held_base)}) {'clears' if ok else 'does not clear'} "
                    f"minImprovementOverBase {_fmt(threshold)} ({p})"),
            ))
        else:
            delta = held.tuned - held.base
            ok = delta >= threshold
            checks.append(_Check(where, ok, f"tuned−base {delta:+.3f} (base {_fmt(held.base)}) {'≥' if ok else '<'} "
                                            f"minImprovementOverBase {_fmt(threshold)}"))
    if gate.min_confidence is not None and held is not None:
        confidence = gate.min_confidence
        if held.paired is None:
            checks.append(_Check(where, False, "minConfidence needs the base (evaluation.compareToBase)"))
        else:
            p_better = held.paired.p_better
            checks.append(_Check(
                where, p_value=1 - p_better, alpha=1 - confidence,
                describe=lambda ok, p, alone: (
                    f"P(tuned>base) {_fmt(p_better)} {'≥' if ok else '<'} minConfidence {_fmt(confidence)}" if alone
                    else f"P(tuned>base) {_fmt(p_better)}, minConfidence {_fmt(confidence)}: {p}"),
            ))
    if gate.max_regression is not None:
        limit = gate.max_regression
        if regression is None or regression.base is None or regression.paired is None:
            checks.append(_Check(where, False, f"maxRegression needs {regression_label} evaluated against the base"))
        elif gate.use_confidence_bound:
            change, reg_base, reg_tuned = regression.paired, regression.base, regression.tuned
            checks.append(_Check(
                where, p_value=change.p_at_most(-limit), alpha=alpha,
                describe=lambda ok, p, _: (
                    f"upper {1 - alpha:.0%} bound of the {regression_label} drop {-change.lower_bound(alpha):+.3f} "
                    f"(estimate {reg_base - reg_tuned:+.3f}, base {_fmt(reg_base)}) {'≤' if ok else '>'} "
                    f"maxRegression {_fmt(limit)} ({p})"),
            ))
        else:
            drop = regression.base - regression.tuned
            ok = drop <= limit
            checks.append(_Check(where, ok, f"{regression_label} drop {drop:+.3f} (base {_fmt(regression.base)}, tuned "
                                            f"{_fmt(regression.tuned)}) {'≤' if ok else '>'} maxRegression {_fmt(limit)}"))
    return checks


def _scope_checks(scope: GateScope, alpha: float) -> list[_Check]:
    """The checks of one gate: on the whole set, and on every slice when `perSlice`."""
    gate, name = scope.gate, scope.gate.metric
    held_out_gate = scope.suite == HELD_OUT
    regression_set = scope.regression if held_out_gate else scope.measured
    label = "regression-set" if held_out_gate else "suite"

    def summary(measured: Measured | None, slice_name: str | None) -> MetricSummary | None:
        if measured is None:
            return None
        table = measured.metrics if slice_name is None else measured.slices.get(slice_name, {})
        return table.get(name)

    checks = _bounds(gate, "", summary(scope.measured, None), summary(regression_set, None), alpha, label)
    if gate.per_slice:
        names = sorted({*(scope.measured.slices if scope.measured else {}), *(regression_set.slices if regression_set else {})})
        for slice_name in names:
            checks += _bounds(gate, slice_name, summary(scope.measured, slice_name), summary(regression_set, slice_name),
                              alpha, label)
    return checks


def _decide(checks: list[_Check], correction: Literal["holm", "none"]) -> int:
    """Decide every test check in place (after the correction); the number of tests."""
    tests = [c for c in checks if c.p_value is not None]
    raw = [c.p_value or 0.0 for c in tests]
    adjusted = holm(raw) if correction == "holm" else raw
    for check, p, p_adj in zip(tests, raw, adjusted):
        check.ok = p_adj <= check.alpha + 1e-12
        verdict = f"{'≤' if check.ok else '>'} α {check.alpha:.3f}"
        if len(tests) == 1:
            note = f"p {p:.3f} {verdict}"
        elif correction == "holm":
            note = f"p {p:.3f}, Holm-adjusted {p_adj:.3f} {verdict}"
        else:
            note = f"p {p:.3f} {verdict}, uncorrected"
        assert check.describe is not None
        check.text = check.describe(check.ok, note, len(tests) == 1)
    return len(tests)


def check_gates(scopes: list[GateScope], confidence: float = 0.95,
                correction: Literal["holm", "none"] = "holm") -> GateVerdicts:
    """Every gate's verdict, in order; the tests among all gates form one corrected family."""
    alpha = 1 - confidence
    per_scope = [_scope_checks(scope, alpha) for scope in scopes]
    tests = _decide([c for checks in per_scope for c in checks], correction)
    results = []
    for scope, checks in zip(scopes, per_scope):
        name = scope.gate.metric
        prefix = name if scope.suite == HELD_OUT else f"[{scope.suite}] {name}"
        passed = all(c.ok for c in checks)
        shown = [c for c in checks if not c.ok] or [c for c in checks if not c.where]
        text = "; ".join((f"slice {c.where}: " if c.where else "") + c.text for c in shown)
        if not checks[0].where and checks[0].text == "not measured":
            text = f"not measured on the {scope.suite} set"
        results.append(GateResult(metric=name, suite=scope.suite, passed=passed, message=f"{prefix}: {text}"))
    return GateVerdicts(results, tests, correction)

"""Gate verdicts and messages that name the set, the metric and the numbers; tests corrected as a family."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from finetune_api.job import Gate
from finetune_trainer.evaluation.gates import HELD_OUT, GateScope, check_gates
from finetune_trainer.evaluation.metrics import mean_table
from finetune_trainer.evaluation.stats import MetricSummary, Paired, summarize

pytestmark = pytest.mark.unit


@dataclass
class Measured:
    metrics: dict[str, MetricSummary]
    slices: dict[str, dict[str, MetricSummary]] = field(default_factory=dict)


def summary(tuned: float, base: float | None, p_better: float = 0.99) -> MetricSummary:
    paired = None if base is None else Paired(0, 0, 0, 0, 0, tuned - base, 0.0, 0.0, p_better)
    return MetricSummary("exact_match", tuned, base, paired)


def measured(tuned: list[float], base: list[float]) -> MetricSummary:
    """A real paired bootstrap of exact_match over these per-item scores."""
    return summarize(mean_table("exact_match", tuned), mean_table("exact_match", base), 2000, 0.95, seed=1)


def held_out(gates: list[Gate], held: dict[str, MetricSummary], regression: dict[str, MetricSummary] | None = None):
    scopes = [GateScope(HELD_OUT, g, Measured(held), Measured(regression) if regression is not None else None) for g in gates]
    return check_gates(scopes).results


def test_all_bounds_pass() -> None:
    gate = Gate(metric="exact_match", min=0.8, min_improvement_over_base=0.5, min_confidence=0.95)
    (result,) = held_out([gate], {"exact_match": summary(0.95, 0.02)})
    assert result.passed and result.suite == "held-out"
    assert result.message == ("exact_match: tuned 0.950 ≥ min 0.800; tuned−base +0.930 (base 0.020) ≥ "
                              "minImprovementOverBase 0.500; P(tuned>base) 0.990 ≥ minConfidence 0.950")


def test_a_failing_bound_is_named_with_its_numbers() -> None:
    gate = Gate(metric="exact_match", min=0.8, min_improvement_over_base=0.5, min_confidence=0.95)
    (result,) = held_out([gate], {"exact_match": summary(0.85, 0.5, p_better=0.6)})
    assert not result.passed
    assert result.message == ("exact_match: tuned−base +0.350 (base 0.500) < minImprovementOverBase 0.500; "
                              "P(tuned>base) 0.600 < minConfidence 0.950")


def test_max_regression_reads_the_regression_set() -> None:
    gate = Gate(metric="exact_match", max_regression=0.05)
    held = {"exact_match": summary(0.9, 0.1)}
    (ok,) = held_out([gate], held, {"exact_match": summary(0.58, 0.6)})
    (bad,) = held_out([gate], held, {"exact_match": summary(0.4, 0.6)})
    assert ok.passed and "drop +0.020" in ok.message
    assert not bad.passed and "regression-set drop +0.200 (base 0.600, tuned 0.400) > maxRegression 0.050" in bad.message


def test_bounds_that_need_the_base_fail_without_it_and_unmeasured_metrics_fail() -> None:
    gates = [Gate(metric="exact_match", min_improvement_over_base=0.1), Gate(metric="judge", min=0.5)]
    base_less, unmeasured = held_out(gates, {"exact_match": summary(0.9, None)})
    assert not base_less.passed and "compareToBase" in base_less.message
    assert not unmeasured.passed and unmeasured.message == "judge: not measured on the held-out set"


def test_the_confidence_bound_must_clear_the_threshold_not_only_the_estimate() -> None:
    # 40 items, tuned better on 8 and worse on 2: estimate +0.15, but the 95% lower bound is near +0.03.
    tuned = [1.0] * 8 + [0.0] * 2 + [1.0] * 15 + [0.0] * 15
    base = [0.0] * 8 + [1.0] * 2 + [1.0] * 15 + [0.0] * 15
    m = {"exact_match": measured(tuned, base)}
    point = Gate(metric="exact_match", min_improvement_over_base=0.1)
    bound = Gate(metric="exact_match", min_improvement_over_base=0.1, use_confidence_bound=True)
    (by_estimate,) = held_out([point], m)
    (by_bound,) = held_out([bound], m)
    assert by_estimate.passed
    assert not by_bound.passed
    assert "lower 95% bound of tuned−base +0.0" in by_bound.message and "does not clear minImprovementOverBase 0.100" in by_bound.message
    assert "p 0." in by_bound.message and "> α 0.050" in by_bound.message
    (low_bar,) = held_out([Gate(metric="exact_match", min_improvement_over_base=0.0, use_confidence_bound=True)], m)
    assert low_bar.passed and "clears minImprovementOverBase 0.000" in low_bar.message


def test_holm_corrects_several_tests_and_none_says_they_are_uncorrected() -> None:
    # p(tuned ≤ base) about 0.03 on one metric: alone it passes at α 0.05; as one of three Holm-corrected
    # tests (the other two certain) it needs p ≤ 0.05 at rank 3 only, but the weakest ranks first when all are weak.
    weak = measured([1.0] * 6 + [0.0] * 1 + [0.0] * 33, [0.0] * 6 + [1.0] * 1 + [0.0] * 33)
    p_weak = 1 - weak.paired.p_better
    assert 0.01 < p_weak < 0.05
    gate = Gate(metric="exact_match", min_confidence=0.95)
    scopes = [GateScope(f"s{i}", gate, Measured({"exact_match": weak})) for i in range(3)]
    corrected = check_gates(scopes, correction="holm")
    uncorrected = check_gates(scopes, correction="none")
    assert corrected.tests == uncorrected.tests == 3
    assert not any(r.passed for r in corrected.results)  # 3·p > 0.05 for the smallest p
    assert "Holm-adjusted" in corrected.results[0].message and corrected.results[0].message.startswith("[s0] exact_match: ")
    assert all(r.passed for r in uncorrected.results) and "uncorrected" in uncorrected.results[0].message
    assert "Holm–Bonferroni" in corrected.statement() and "NOT corrected" in uncorrected.statement()
    (alone,) = check_gates(scopes[:1]).results
    assert alone.passed


def test_a_per_slice_gate_names_the_slice_that_dropped() -> None:
    whole = summary(0.70, 0.72)
    slices = {"billing": {"exact_match": summary(0.9, 0.8)}, "shipping": {"exact_match": summary(0.5, 0.64)}}
    gate = Gate(metric="exact_match", max_regression=0.05, per_slice=True)
    (result,) = check_gates([GateScope("regression-suite", gate, Measured({"exact_match": whole}, slices))]).results
    assert not result.passed and result.suite == "regression-suite"
    assert result.message == ("[regression-suite] exact_match: slice shipping: suite drop +0.140 (base 0.640, tuned 0.500) "
                              "> maxRegression 0.050")
    (whole_only,) = check_gates([GateScope("regression-suite", Gate(metric="exact_match", max_regression=0.05),
                                           Measured({"exact_match": whole}, slices))]).results
    assert whole_only.passed

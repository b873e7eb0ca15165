"""Gate verdicts and messages that name the metric and the numbers."""

from __future__ import annotations

import pytest

from finetune_api.job import Gate
from finetune_trainer.evaluation.gates import check_gates
from finetune_trainer.evaluation.stats import MetricSummary, Paired

pytestmark = pytest.mark.unit


def summary(tuned: float, base: float | None, p_better: float = 0.99) -> MetricSummary:
    paired = None if base is None else Paired(0, 0, 0, 0, 0, tuned - base, 0.0, 0.0, p_better)
    return MetricSummary("exact_match", tuned, base, paired)


def test_all_bounds_pass() -> None:
    gate = Gate(metric="exact_match", min=0.8, min_improvement_over_base=0.5, min_confidence=0.95)
    (result,) = check_gates([gate], {"exact_match": summary(0.95, 0.02)})
    assert result.passed
    assert result.message == ("exact_match: tuned 0.950 ≥ min 0.800; tuned−base +0.930 (base 0.020) ≥ "
                              "minImprovementOverBase 0.500; P(tuned>base) 0.990 ≥ minConfidence 0.950")


def test_a_failing_bound_is_named_with_its_numbers() -> None:
    gate = Gate(metric="exact_match", min=0.8, min_improvement_over_base=0.5, min_confidence=0.95)
    (result,) = check_gates([gate], {"exact_match": summary(0.85, 0.5, p_better=0.6)})
    assert not result.passed
    assert result.message == ("exact_match: tuned−base +0.350 (base 0.500) < minImprovementOverBase 0.500; "
                              "P(tuned>base) 0.600 < minConfidence 0.950")


def test_max_regression_reads_the_regression_set() -> None:
    gate = Gate(metric="exact_match", max_regression=0.05)
    held = {"exact_match": summary(0.9, 0.1)}
    (ok,) = check_gates([gate], held, {"exact_match": summary(0.58, 0.6)})
    (bad,) = check_gates([gate], held, {"exact_match": summary(0.4, 0.6)})
    assert ok.passed and "drop +0.020" in ok.message
    assert not bad.passed and "regression-set drop +0.200 (base 0.600, tuned 0.400) > maxRegression 0.050" in bad.message


def test_bounds_that_need_the_base_fail_without_it_and_unmeasured_metrics_fail() -> None:
    gates = [Gate(metric="exact_match", min_improvement_over_base=0.1), Gate(metric="judge", min=0.5)]
    base_less, unmeasured = check_gates(gates, {"exact_match": summary(0.9, None)})
    assert not base_less.passed and "compareToBase" in base_less.message
    assert not unmeasured.passed and unmeasured.message == "judge: not measured on the held-out set"

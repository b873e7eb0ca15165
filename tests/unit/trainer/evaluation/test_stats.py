"""The paired bootstrap against answers known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finetune_trainer.evaluation.metrics import classification_tables, mean_table
from finetune_trainer.evaluation.stats import paired_comparison, single_interval, summarize

pytestmark = pytest.mark.unit


def test_all_wins_gives_an_interval_at_one_and_certainty() -> None:
    paired = paired_comparison(mean_table("m", [1.0] * 50), mean_table("m", [0.0] * 50), 1000, 0.95)
    assert (paired.wins, paired.losses, paired.ties) == (50, 0, 0)
    assert (paired.flips_to_pass, paired.flips_to_fail) == (50, 0)
    assert paired.delta == paired.ci_low == paired.ci_high == 1.0
    assert paired.p_better == 1.0


def test_identical_models_have_no_edge() -> None:
    scores = [1.0, 0.0, 1.0, 1.0, 0.0] * 10
    paired = paired_comparison(mean_table("m", scores), mean_table("m", scores), 500, 0.95)
    assert paired.ties == 50 and paired.delta == 0.0
    assert paired.ci_low == paired.ci_high == 0.0 and paired.p_better == 0.0


def test_a_symmetric_case_is_centred_at_zero() -> None:
    tuned = [1.0, 0.0] * 100
    base = [0.0, 1.0] * 100
    paired = paired_comparison(mean_table("m", tuned), mean_table("m", base), 4000, 0.9, seed=3)
    assert (paired.wins, paired.losses, paired.flips_to_pass, paired.flips_to_fail) == (100, 100, 100, 100)
    assert paired.delta == 0.0
    assert paired.ci_low == pytest.approx(-paired.ci_high, abs=0.02)
    assert paired.ci_low < 0 < paired.ci_high
    assert 0.4 < paired.p_better < 0.6


def test_the_interval_matches_the_normal_approximation_on_a_large_sample() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    tuned = rng.normal(0.6, 0.2, n)
    base = tuned - rng.normal(0.05, 0.3, n)
    paired = paired_comparison(mean_table("m", list(tuned)), mean_table("m", list(base)), 4000, 0.95, seed=11)
    diff = tuned - base
    half = 1.959964 * diff.std(ddof=1) / math.sqrt(n)
    assert paired.delta == pytest.approx(diff.mean())
    assert paired.ci_low == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert paired.ci_high == pytest.approx(diff.mean() + half, abs=0.15 * half)
    z = diff.mean() / (diff.std(ddof=1) / math.sqrt(n))
    expected_p = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert paired.p_better == pytest.approx(expected_p, abs=0.01)


def test_the_bootstrap_is_seeded() -> None:
    tuned, base = mean_table("m", [1, 0, 1, 1, 0, 1]), mean_table("m", [0, 0, 1, 0, 1, 0])
    first = paired_comparison(tuned, base, 300, 0.95, seed=5)
    assert first == paired_comparison(tuned, base, 300, 0.95, seed=5)


def test_macro_f1_is_recomputed_per_resample() -> None:
    refs = ["a", "b", "a", "b"] * 10
    perfect = classification_tables(refs, refs, ["a", "b"])["macro_f1"]
    always_a = classification_tables(["a"] * 40, refs, ["a", "b"])["macro_f1"]
    assert perfect.value() == 1.0
    assert always_a.value() == pytest.approx((2 / 3 + 0) / 2)  # a: P=0.5 R=1 → F1 2/3; b: 0
    summary = summarize(perfect, always_a, 500, 0.95)
    assert summary.paired is not None and summary.paired.ci_low > 0 and summary.paired.p_better == 1.0


def test_without_a_base_the_interval_is_the_models_own() -> None:
    interval = single_interval(mean_table("m", [1.0] * 30 + [0.0] * 30), 2000, 0.95, seed=1)
    assert interval.low < 0.5 < interval.high
    result = summarize(mean_table("m", [1.0, 0.0]), None, 200, 0.95).to_result()
    assert result.base is None and result.delta is None and result.p_better is None and result.ci_low is not None


def test_holm_adjusts_step_down_and_keeps_the_order() -> None:
    from finetune_trainer.evaluation.stats import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.9]) == [0.8, 0.9]


def test_the_minimum_detectable_difference_shrinks_with_the_square_root_of_the_items() -> None:
    from statistics import NormalDist

    from finetune_trainer.evaluation.stats import minimum_detectable_difference

    tuned = np.array([1.0, 0.0] * 50)
    base = np.array([0.0, 0.0] * 50)
    sd = float(np.std(tuned - base, ddof=1))
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert minimum_detectable_difference(tuned, base, 0.95) == pytest.approx(z * sd / 10)
    four_times = minimum_detectable_difference(np.tile(tuned, 4), np.tile(base, 4), 0.95)
    assert four_times == pytest.approx(z * float(np.std(np.tile(tuned - base, 4), ddof=1)) / 20)
    # identical models: no spread in the differences, so the pooled scores' spread (×√2) is used
    same = minimum_detectable_difference(tuned, tuned, 0.95)
    assert same == pytest.approx(z * float(np.std(np.concatenate([tuned, tuned]), ddof=1)) * math.sqrt(2) / 10)
    assert minimum_detectable_difference(np.ones(10), np.ones(10), 0.95) is None

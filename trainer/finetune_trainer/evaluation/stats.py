"""Paired comparison of tuned and base on the same items: wins, losses, flips and a bootstrap.

Both models answered the same items, so the comparison resamples items (not models): one resample
draws n items with replacement and recomputes the metric for both models on that draw. The spread of
the difference over resamples gives the confidence interval and P(tuned > base).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from finetune_api.job import MetricResult

from .metrics import MetricTable

_CHUNK = 256  # resamples per matrix product: bounds memory at _CHUNK × items


@dataclass
class Paired:
    """The paired statistics of one metric."""

    wins: int
    losses: int
    ties: int
    flips_to_pass: int
    """Items the base failed and the tuned model passes."""
    flips_to_fail: int
    """Items the base passed and the tuned model fails."""
    delta: float
    ci_low: float
    ci_high: float
    p_better: float
    """Share of resamples in which the tuned model is strictly better."""
    boot: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    """Tuned minus base on every resample: one-sided tests of any threshold read it."""

    def p_at_most(self, threshold: float) -> float:
        """The bootstrap p-value of "tuned − base ≤ threshold": the share of resamples at or below it."""
        return float((self.boot <= threshold).mean()) if len(self.boot) else 1.0

    def lower_bound(self, alpha: float) -> float:
        """The one-sided (1 − alpha) lower confidence bound of tuned − base."""
        return float(np.quantile(self.boot, alpha)) if len(self.boot) else self.delta

    def to_json(self) -> dict[str, Any]:
        return {
            "wins": self.wins, "losses": self.losses, "ties": self.ties,
            "flipsToPass": self.flips_to_pass, "flipsToFail": self.flips_to_fail,
            "delta": self.delta, "ciLow": self.ci_low, "ciHigh": self.ci_high, "pBetter": self.p_better,
        }


@dataclass
class Interval:
    """A bootstrap interval of one model's metric (used when there is no base)."""

    low: float
    high: float


def resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) counts: how often each item is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(float)


def _bootstrap_values(table: MetricTable, counts: np.ndarray) -> np.ndarray:
    n = len(table.values)
    out = [table.aggregate(counts[i : i + _CHUNK] @ table.values, n) for i in range(0, len(counts), _CHUNK)]
    return np.concatenate(out)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.asarray(np.quantile(values, [alpha, 1 - alpha]))  # numpy's stubs type it as one float
    return float(low), float(high)


def paired_comparison(
    tuned: MetricTable,
    base: MetricTable,
    samples: int,
    confidence: float,
    seed: int = 0,
    pass_threshold: float = 0.5,
) -> Paired:
    """Per-item wins/losses/ties/flips (pass: score ≥ `pass_threshold`) and the bootstrap of tuned minus base."""
    if len(tuned.values) != len(base.values):
        raise ValueError(f"{tuned.name}: tuned has {len(tuned.values)} items, base {len(base.values)}")
    diff = tuned.per_item - base.per_item
    tuned_pass, base_pass = tuned.per_item >= pass_threshold, base.per_item >= pass_threshold
    delta = tuned.value() - base.value()
    if len(diff) == 0:
        return Paired(0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
    counts = resample_counts(len(diff), samples, seed)
    boot = _bootstrap_values(tuned, counts) - _bootstrap_values(base, counts)
    low, high = _percentiles(boot, confidence)
    return Paired(
        wins=int((diff > 0).sum()),
        losses=int((diff < 0).sum()),
        ties=int((diff == 0).sum()),
        flips_to_pass=int((tuned_pass & ~base_pass).sum()),
        flips_to_fail=int((~tuned_pass & base_pass).sum()),
        delta=float(delta),
        ci_low=low,
        ci_high=high,
        p_better=float((boot > 0).mean()),
        boot=boot,
    )


def single_interval(table: MetricTable, samples: int, confidence: float, seed: int = 0) -> Interval:
    """The bootstrap interval of one model's metric."""
    if len(table.values) == 0:
        return Interval(0.0, 0.0)
    boot = _bootstrap_values(table, resample_counts(len(table.values), samples, seed))
    return Interval(*_percentiles(boot, confidence))


POWER = 0.8
"""Power at which the minimum detectable difference is stated."""
TEST_DESCRIPTION = (
    "paired bootstrap over items (both models answered the same items): percentile intervals of tuned − base; "
    "gates test one-sided (tuned − base above a threshold)"
)


def minimum_detectable_difference(tuned: np.ndarray, base: np.ndarray | None, confidence: float) -> float | None:
    """The smallest true difference a two-sided test at `confidence` finds with 80% power on this many
    items: (z₁₋α/₂ + z_power)·σ/√n, σ the spread of the per-item differences (of the pooled scores ×√2
    when the differences do not vary, as between identical models). None when nothing varies."""
    n = len(tuned)
    if n < 2:
        return None
    sigma = float(np.std(tuned - base, ddof=1)) if base is not None else 0.0
    if sigma == 0.0:
        pooled = np.concatenate([tuned, base]) if base is not None else tuned
        sigma = float(np.std(pooled, ddof=1)) * (2 ** 0.5 if base is not None else 1.0)
    if sigma == 0.0:
        return None
    z = NormalDist()
    return (z.inv_cdf(1 - (1 - confidence) / 2) + z.inv_cdf(POWER)) * sigma / n ** 0.5


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (step-down, monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class MetricSummary:
    """One metric on one set: both models' values and, with a base, the paired comparison.

    `ci_low`/`ci_high` are the interval of tuned minus base when there is a base, else of the tuned
    model's own value.
    """

    name: str
    tuned: float
    base: float | None = None
    paired: Paired | None = None
    interval: Interval | None = None
    items: int = 0
    mdd: float | None = None
    """Minimum detectable difference at this many items (`minimum_detectable_difference`)."""

    def to_result(self) -> MetricResult:
        interval = (self.paired.ci_low, self.paired.ci_high) if self.paired else (
            (self.interval.low, self.interval.high) if self.interval else (None, None)
        )
        return MetricResult(
            name=self.name, tuned=self.tuned, base=self.base,
            delta=None if self.base is None else self.tuned - self.base,
            ci_low=interval[0], ci_high=interval[1],
            p_better=self.paired.p_better if self.paired else None,
        )

    def to_json(self) -> dict[str, Any]:
        data = self.to_result().to_api()
        if self.paired is not None:
            data.update({k: v for k, v in self.paired.to_json().items() if k not in data})
        data.update({"items": self.items, "minDetectableDifference": self.mdd})
        return data


def summarize(
    tuned: MetricTable, base: MetricTable | None, samples: int, confidence: float, seed: int = 0,
    pass_threshold: float = 0.5,
) -> MetricSummary:
    """The summary of one metric: values, and the paired bootstrap against the base when there is one."""
    n = len(tuned.values)
    mdd = minimum_detectable_difference(tuned.per_item, base.per_item if base is not None else None, confidence)
    if base is None:
        return MetricSummary(tuned.name, tuned.value(), interval=single_interval(tuned, samples, confidence, seed),
                             items=n, mdd=mdd)
    paired = paired_comparison(tuned, base, samples, confidence, seed, pass_threshold)
    return MetricSummary(tuned.name, tuned.value(), base.value(), paired, items=n, mdd=mdd)

"""The canary's analysis (DESIGN.md §5.4): each arm's `/metrics` in, a verdict out (keep, promote, roll back).

Pure, like `decide`: the runtime (`runtime.canary`) reads every ready replica's `/metrics` and hands the
samples over; the window arithmetic and the judgement happen here. The signals are the ones a vLLM
server already exports, names read from vLLM 0.32's source:
- `http_requests_total{handler, method, status}`: prometheus-fastapi-instrumentator, which vLLM's API
  server mounts (`vllm/entrypoints/serve/instrumentator/metrics.py`); statuses are grouped `2xx`, `4xx`,
  `5xx`. Requests are those of the completion handlers; errors are their `5xx` (a 4xx is the client's).
- `vllm:e2e_request_latency_seconds` (histogram, `vllm/v1/metrics/loggers.py`): end-to-end latency of
  each finished request; p50 and p95 are estimated from its buckets as Prometheus' `histogram_quantile`.
Both are per process, so the arms are separate Deployments (a LoRA adapter's requests are labelled
with the pool's base model, and cannot be told apart in a shared pool).
With `shadowGrading`, the graders' mean scores of both arms on a shadow sample (`ShadowSummary`, from
the canary's shadow Job) are a further signal, judged as soon as they are in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from finetune_api.contract.summaries import ShadowSummary
from finetune_api.job import CanarySpec

REQUESTS_METRIC = "http_requests_total"
LATENCY_METRIC = "vllm:e2e_request_latency_seconds"
INFERENCE_HANDLERS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
"""The handlers whose requests the arms are compared on (not `/v1/models`, `/metrics`, admin calls)."""
QUANTILES = (0.5, 0.95)


@dataclass(frozen=True)
class ArmMetrics:
    """Counters of one replica (or an arm's sum over its replicas, or a window's difference)."""

    requests: float = 0.0
    """Completion requests answered, any status."""
    errors: float = 0.0
    """Of which HTTP 5xx."""
    latency: tuple[tuple[float, float], ...] = ()
    """`vllm:e2e_request_latency_seconds` as cumulative (upper bound, count) buckets, `+Inf` last."""

    def __add__(self, other: ArmMetrics) -> ArmMetrics:
        return ArmMetrics(self.requests + other.requests, self.errors + other.errors,
                          _combine(self.latency, other.latency, 1.0))

    def __sub__(self, other: ArmMetrics) -> ArmMetrics:
        return ArmMetrics(self.requests - other.requests, self.errors - other.errors,
                          _combine(self.latency, other.latency, -1.0))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    def latency_quantile(self, q: float) -> float | None:
        """Prometheus' `histogram_quantile`: linear within the bucket holding rank q; the highest finite
        bound when it falls in `+Inf`; None without observations."""
        if not self.latency or self.latency[-1][1] <= 0:
            return None
        rank = q * self.latency[-1][1]
        lower, below = 0.0, 0.0
        for upper, count in self.latency:
            if count >= rank:
                if math.isinf(upper):
                    return lower
                if count == below:
                    return upper
                return lower + (upper - lower) * (rank - below) / (count - below)
            lower, below = upper, count
        return lower


def _combine(a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...],
             sign: float) -> tuple[tuple[float, float], ...]:
    if not a:
        return tuple((le, sign * n) for le, n in b)
    if not b:
        return a
    counts = dict(a)
    for le, n in b:
        counts[le] = counts.get(le, 0.0) + sign * n
    return tuple(sorted(counts.items()))


def parse_metrics(text: str) -> ArmMetrics:
    """One replica's `/metrics` (Prometheus text format, read with `prometheus_client`'s parser)."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS_METRIC and sample.labels.get("handler") in INFERENCE_HANDLERS:
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == f"{LATENCY_METRIC}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return ArmMetrics(requests, errors, tuple(sorted(buckets.items())))


def window(start: Mapping[str, ArmMetrics], now: Mapping[str, ArmMetrics]) -> ArmMetrics:
    """An arm's counts since the window started, over replicas keyed by pod and container start: a
    replica seen at the start counts from its sample then; one that (re)started since counts whole
    (its counters began after the start); one gone since takes its counts with it."""
    total = ArmMetrics()
    for replica, metrics in now.items():
        total = total + (metrics - start[replica] if replica in start else metrics)
    return total


@dataclass(frozen=True)
class Keep:
    message: str


@dataclass(frozen=True)
class Promote:
    message: str


@dataclass(frozen=True)
class RollBack:
    signal: str
    """`errorRate`, `latencyP50`, `latencyP95`, `traffic` (too few requests by the deadline), `grader <name>`
    or `shadowGrading` (no grades: the shadow Job failed, or had not reported by the deadline)."""
    message: str


Verdict = Keep | Promote | RollBack


@dataclass(frozen=True)
class Arms:
    """Both arms' counts in the analysis window."""

    tuned: ArmMetrics = field(default_factory=ArmMetrics)
    base: ArmMetrics = field(default_factory=ArmMetrics)
    unread: tuple[str, ...] = ()
    """Replicas whose `/metrics` could not be read this time, or not ready (their counts are missing)."""


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


@dataclass(frozen=True)
class Shadow:
    """The shadow grading as observed: its summary once the Job reported, or why it never will."""

    summary: ShadowSummary | None = None
    failure: str | None = None
    """The shadow Job failed (its own error, or its exit codes)."""


def grades_text(summary: ShadowSummary) -> str:
    return ", ".join(f"{s.grader} {s.tuned:.3f} vs {s.base:.3f}" for s in summary.scores)


def judge_grades(spec: CanarySpec, shadow: Shadow, elapsed_seconds: float) -> Verdict | None:
    """The shadow grading's verdict: a roll back when a grader's tuned score is below the base's by more
    than `maxScoreDrop`, or when no grades came (a failed Job; none by `timeoutSeconds`); Keep while they
    are awaited; None when the grades pass (or none were asked for) and the metrics decide."""
    grading = spec.shadow_grading
    if grading is None:
        return None
    if shadow.failure is not None:
        return RollBack("shadowGrading", f"the shadow grading failed: {shadow.failure}")
    summary = shadow.summary
    if summary is None:
        if elapsed_seconds >= spec.timeout_seconds:
            return RollBack("shadowGrading", f"no shadow grades within timeoutSeconds {spec.timeout_seconds}")
        return Keep("analyzing: waiting for the shadow grading")
    for score in summary.scores:
        drop = score.base - score.tuned
        if drop > grading.max_score_drop:
            return RollBack(f"grader {score.grader}",
                            f"grader {score.grader} on a shadow sample of {summary.items} held-out prompt(s): "
                            f"{score.tuned:.3f} on the tuned arm vs {score.base:.3f} on the base: drop {drop:.3f} "
                            f"is above maxScoreDrop {grading.max_score_drop:g}")
    return None


NOT_GRADED = Shadow()
"""No shadow grades (none asked for, or none yet)."""


def judge(spec: CanarySpec, arms: Arms, elapsed_seconds: float, shadow: Shadow = NOT_GRADED) -> Verdict:
    """The analysis' verdict at `elapsed_seconds` into its window. Shadow grades (when asked for) are
    judged as soon as they are in: a sample of known prompts is complete evidence by itself. The metrics
    are judged once the window is complete (`durationSeconds` passed and each arm answered
    `minRequests`), on every signal, error rate first; an arm still short at `timeoutSeconds` rolls back
    (no evidence is not a pass, as in Flagger). Promoted only when the grades are in too."""
    graded = judge_grades(spec, shadow, elapsed_seconds)
    if isinstance(graded, RollBack):
        return graded
    verdict = judge_metrics(spec, arms, elapsed_seconds)
    if not isinstance(verdict, Promote) or spec.shadow_grading is None:
        return verdict
    if isinstance(graded, Keep):
        return Keep(f"{graded.message}; metrics: {verdict.message}")
    summary = shadow.summary
    assert summary is not None  # judge_grades passed them
    return Promote(f"{verdict.message}; shadow grades ({summary.items} prompt(s), tuned vs base): {grades_text(summary)}")


def judge_metrics(spec: CanarySpec, arms: Arms, elapsed_seconds: float) -> Verdict:
    """The verdict of the arms' `/metrics` alone."""
    tuned, base = arms.tuned, arms.base
    counts = f"tuned {tuned.requests:.0f}, base {base.requests:.0f} request(s)"
    short = [name for name, arm in (("tuned", tuned), ("base", base)) if arm.requests < spec.min_requests]
    if elapsed_seconds < spec.duration_seconds or short:
        if elapsed_seconds >= spec.timeout_seconds:
            return RollBack("traffic", f"the {' and '.join(short)} arm(s) answered fewer than minRequests "
                                       f"{spec.min_requests} within timeoutSeconds {spec.timeout_seconds} ({counts})")
        left = max(spec.duration_seconds - elapsed_seconds, 0)
        return Keep(f"analyzing: {counts} of {spec.min_requests} each; {left:.0f}s of the duration left")
    increase = tuned.error_rate - base.error_rate
    if increase > spec.max_error_rate_increase:
        return RollBack("errorRate", f"HTTP 5xx rate {_pct(tuned.error_rate)} ({tuned.errors:.0f}/{tuned.requests:.0f}) "
                                     f"on the tuned arm vs {_pct(base.error_rate)} ({base.errors:.0f}/{base.requests:.0f}) "
                                     f"on the base: +{_pct(increase)} is above maxErrorRateIncrease "
                                     f"{_pct(spec.max_error_rate_increase)}")
    readings = []
    for q in QUANTILES:
        name = f"p{round(q * 100)}"
        t, b = tuned.latency_quantile(q), base.latency_quantile(q)
        readings.append(f"{name} {_secs(t)} vs {_secs(b)}")
        if t is not None and b is not None and b > 0 and t / b > spec.max_latency_ratio:
            return RollBack(f"latencyP{round(q * 100)}",
                            f"end-to-end latency {name} {_secs(t)} on the tuned arm vs {_secs(b)} on the base: "
                            f"ratio {t / b:.2f} is above maxLatencyRatio {spec.max_latency_ratio:g} ({counts})")
    return Promote(f"tuned arm as good as the base: HTTP 5xx {_pct(tuned.error_rate)} vs {_pct(base.error_rate)}, "
                   f"latency {', '.join(readings)} ({counts})")

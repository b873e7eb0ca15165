"""Prometheus metrics of the operator (served on `FT_METRICS_PORT`, default 8080, at /metrics).

Jobs by phase is computed at scrape time from the operator's own cache of FineTuneJobs; the other
series are fed by the `Observe` actions of `reconcile.decide` and by `k8s.K8s` (API requests).
"""

from __future__ import annotations

from collections import Counter
from typing import get_args
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter as PromCounter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from finetune_api.job import Phase
from .reconcile.actions import Observe

PHASE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
PHASES: tuple[str, ...] = get_args(Phase)


class _PhaseCollector:
    def __init__(self, phases: Callable[[], Iterable[str]]) -> None:
        self.phases = phases

    def collect(self):
        family = GaugeMetricFamily("finetune_jobs", "FineTuneJobs by phase", labels=["phase"])
        counts = Counter(self.phases())
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class Metrics:
    """The operator's series in their own registry (tests build one each)."""

    def __init__(self, phases: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_PhaseCollector(phases))
        self.phase_seconds = Histogram(
            "finetune_phase_duration_seconds", "Time spent in a phase", ["phase"],
            buckets=PHASE_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram(
            "finetune_queue_wait_seconds", "Time from Queued to admission", ["queue"],
            buckets=PHASE_BUCKETS, registry=self.registry)
        self.retries = PromCounter(
            "finetune_training_retries", "Training attempts that ended early, by failure class", ["class"],
            registry=self.registry)
        self.gpu_hours = PromCounter(
            "finetune_gpu_hours", "Accelerator-hours held by training", ["namespace"], registry=self.registry)
        self.reconcile_errors = PromCounter(
            "finetune_reconcile_errors", "Reconciles that raised, by class (transient, permanent) and reason",
            ["class", "reason"], registry=self.registry)
        self.api_requests = PromCounter(
            "finetune_operator_api_requests", "API requests made by the operator", ["verb", "resource"],
            registry=self.registry)

    def record(self, observation: Observe) -> None:
        labels = observation.labels
        if observation.metric == "phase_seconds":
            self.phase_seconds.labels(labels.get("phase", "")).observe(observation.value)
        elif observation.metric == "queue_wait_seconds":
            self.queue_wait.labels(labels.get("queue", "")).observe(observation.value)
        elif observation.metric == "retry":
            self.retries.labels(labels.get("class", "")).inc(observation.value)
        elif observation.metric == "gpu_hours":
            self.gpu_hours.labels(labels.get("namespace", "")).inc(observation.value)
        elif observation.metric == "reconcile_error":
            self.reconcile_errors.labels(labels.get("class", ""), labels.get("reason", "")).inc(observation.value)

    def count_request(self, verb: str, resource: str) -> None:
        self.api_requests.labels(verb, resource).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

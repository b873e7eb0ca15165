"""What the job controller and the admission loop share in one operator process: one settings object,
one Kubernetes client (RBAC-checked, every request counted in the metrics), one executor and the metrics.

Made once by the first startup handler that asks (`of(memo)`), kept in Kopf's operator-wide memo: the
whole operator (`finetune_operator.main`) and the queue handlers alone (`kopf run -m
finetune_operator.handlers.queue`) get the same wiring."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from ..k8s import K8s
from ..metrics import Metrics
from ..settings import OperatorSettings
from .controller import JobController
from .executor import Executor
from .indexes import Indexes

MEMO_KEY = "finetune_context"


@functools.cache
def process_settings() -> OperatorSettings:
    """The process's one `OperatorSettings`, read from `FT_*` once (main.py needs it before startup,
    to register Kueue's handlers and to pick the watched namespaces)."""
    return OperatorSettings.from_env()


def api_client() -> Any:
    """In-cluster credentials (the chart's ServiceAccount), else the `KUBECONFIG` file."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


@dataclass
class Context:
    """The operator's shared parts; `jobs` is the FineTuneJob controller."""

    settings: OperatorSettings
    k8s: K8s
    metrics: Metrics
    executor: Executor
    indexes: Indexes
    jobs: JobController

    @classmethod
    def create(cls, settings: OperatorSettings, api: Any, indexes: Indexes) -> Context:
        jobs: JobController | None = None
        metrics = Metrics(phases=lambda: jobs.cache.phases() if jobs else ())
        k8s = K8s(api, on_request=metrics.count_request)
        executor = Executor()
        jobs = JobController(k8s, settings, metrics, executor, indexes)
        return cls(settings, k8s, metrics, executor, indexes, jobs)


def of(memo: Any, indexes: Indexes | None = None) -> Context:
    """The process's context: made on first use (by a startup handler, which passes Kopf's live indexes)
    from the process settings and the API credentials, then kept in the operator's memo."""
    context: Context | None = memo.get(MEMO_KEY)
    if context is None:
        if indexes is None:
            raise RuntimeError("the context is made by a startup handler (finetune_operator.handlers)")
        context = memo[MEMO_KEY] = Context.create(process_settings(), api_client(), indexes)
    return context

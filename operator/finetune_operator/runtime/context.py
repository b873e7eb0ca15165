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

from .. import rbac
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


def rbac_features(settings: OperatorSettings, env: dict[str, str] | None = None) -> frozenset[rbac.Feature]:
    """The optional features this process uses: the chart grants only their rules, so the k8s layer
    refuses calls of the others before they reach the API server as a 403."""
    env = dict(os.environ if env is None else env)
    on: dict[rbac.Feature, bool] = {
        "kueue": settings.queue_mode == "kueue",
        "peering": bool(env.get("FT_PEERING")),
        "gatewayApi": settings.gateway_api,
    }
    return frozenset(feature for feature, enabled in on.items() if enabled)


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
        k8s = K8s(api, rules=rbac.rules_for(rbac_features(settings)), on_request=metrics.count_request)
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

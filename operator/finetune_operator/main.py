"""The operator process: `kopf run -m finetune_operator.main` (or `python -m finetune_operator.main`).

Settings come from `FT_*` variables (`OperatorSettings.from_env`) plus the process-level ones here:
`FT_METRICS_PORT` (Prometheus /metrics, default 9090), `FT_PEERING` (a peering name: several replicas
elect one active operator; empty or unset runs standalone, the one-replica default),
`FT_PEERING_PRIORITY` (default: derived from `POD_ID`), and for `python -m`: `FT_LIVENESS` (default
`http://0.0.0.0:8080/healthz`), the chart's ports.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import kopf

from .handlers import job as job_handlers
from .handlers import queue as queue_handlers  # noqa: F401  (registers the admission loop)
from .runtime import context
from .runtime.executor import WORKERS
from .runtime.indexes import Indexes

PREFIX = "finetune.dev"
if context.process_settings().queue_mode == "kueue":
    job_handlers.register_kueue()


def peering_priority(env: Mapping[str, str]) -> int:
    """FT_PEERING_PRIORITY, else a number derived from the pod name: replicas of equal priority would
    all stay active (Kopf only warns), so each replica gets its own and the highest one works."""
    if env.get("FT_PEERING_PRIORITY"):
        return int(env["FT_PEERING_PRIORITY"])
    identity = env.get("POD_ID") or socket.gethostname()
    return 1 + int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16) % 1_000_000


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Kopf under our own prefixes, one status writer, no finalizer; the shared context and /metrics."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.WARNING
    peering = os.environ.get("FT_PEERING", "")
    settings.peering.standalone = not peering
    if peering:
        settings.peering.name = peering
        settings.peering.clusterwide = True
        settings.peering.priority = peering_priority(os.environ)
    settings.execution.max_workers = WORKERS
    settings.watching.server_timeout = 600
    ctx = context.of(memo, Indexes.from_kwargs(kwargs))
    ctx.metrics.serve(int(os.environ.get("FT_METRICS_PORT", "9090")))


@kopf.on.probe(id="finetunejobs")
def cached_jobs(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many FineTuneJobs the operator holds."""
    return len(context.of(memo).jobs.cache)


@kopf.on.probe(id="apiRequests")
def api_requests(memo: kopf.Memo, **_: Any) -> int:
    return context.of(memo).k8s.total_requests


def main() -> None:
    """`python -m finetune_operator.main`: watch `FT_WATCH_NAMESPACES` (or the whole cluster)."""
    namespaces = context.process_settings().watch_namespaces
    kopf.configure(verbose=os.environ.get("FT_VERBOSE") == "1")
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=not os.environ.get("FT_PEERING"),
        peering_name=os.environ.get("FT_PEERING") or None,
        liveness_endpoint=os.environ.get("FT_LIVENESS", "http://0.0.0.0:8080/healthz"),
    )


if __name__ == "__main__":
    main()

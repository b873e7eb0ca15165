"""The canary's readings (the edge of `reconcile.canary`): each arm's ready replicas' `/metrics`, as counts
since the analysis window started.

The window's start samples are kept in memory per job and generation: after an operator restart the
counts start again from the first reading (the deadline, kept in the status, does not move). `/metrics`
is outside vLLM's API-key guard (which covers `/v1` paths only), so no key is sent."""

from __future__ import annotations

import logging

import httpx

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import VLLM_PORT

from ..builders.common import LABEL_ARM, LABEL_JOB, LABEL_MODEL_GROUP
from ..k8s import K8s
from ..reconcile.canary import ArmMetrics, Arms, parse_metrics, window
from ..reconcile.pool import replica_of
from .executor import Executor
from .job_cache import Key
from .pools import VLLM_CONTAINER

log = logging.getLogger("finetune_operator.canary")
TIMEOUT = httpx.Timeout(10.0, connect=2.0)
"""A replica in the cluster network connects at once; one that does not is counted as unread."""
ARMS = ("tuned", "base")

Samples = dict[str, ArmMetrics]
"""Per replica (`<pod>@<container start>`) counters."""


class MetricsUnreadable(RuntimeError):
    """A replica's `/metrics` did not answer, or not in the Prometheus text format."""


def read_metrics(url: str) -> ArmMetrics:
    """One replica's `/metrics`."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
        response.raise_for_status()
        return parse_metrics(response.text)
    except (httpx.HTTPError, ValueError) as e:
        raise MetricsUnreadable(f"{url}/metrics: {e}") from None


class CanaryReader:
    def __init__(self, k8s: K8s, executor: Executor) -> None:
        self.k8s = k8s
        self.executor = executor
        self.starts: dict[tuple[Key, int], dict[str, Samples]] = {}

    def forget(self, key: Key) -> None:
        for window_key in [k for k in self.starts if k[0] == key]:
            del self.starts[window_key]

    async def read(self, job: FineTuneJob) -> Arms:
        """Both arms' counts since this generation's window started (the first reading starts it)."""
        ns, name = job.metadata.namespace or "", job.metadata.name
        now: dict[str, Samples] = {}
        unread: list[str] = []
        for arm in ARMS:
            selector = f"{LABEL_JOB}={name},{LABEL_MODEL_GROUP}={name},{LABEL_ARM}={arm}"
            pods = await self.executor.call(self.k8s.list, "Pod", ns, selector)
            now[arm] = {}
            for replica in filter(None, (replica_of(p, VLLM_CONTAINER, VLLM_PORT) for p in pods)):
                if not (replica.container_ready and replica.url):
                    unread.append(f"{replica.pod} (not ready)")
                    continue
                try:
                    metrics = await self.executor.call(read_metrics, replica.url)
                except MetricsUnreadable as e:
                    log.info("canary %s/%s: %s: %s", ns, name, replica.pod, e)
                    unread.append(replica.pod)
                    continue
                now[arm][f"{replica.pod}@{replica.started_at}"] = metrics
        current = ((ns, name), job.metadata.generation or 1)
        for older in [k for k in self.starts if k[0] == current[0] and k != current]:
            del self.starts[older]  # a new generation's canary starts a new window
        start = self.starts.setdefault(current, now)
        return Arms(tuned=window(start["tuned"], now["tuned"]), base=window(start["base"], now["base"]),
                    unread=tuple(unread))


"""What a reconcile knows of a job's children: the indexes, plus the few reads a phase needs (the
trainer's progress line, the serving Deployments and smoke request, the ConfigMap's spec)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from finetune_api import TERMINAL_PHASES, FineTuneJob
from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.summaries import PrepareSummary
from finetune_api.contract.vllm import VLLM_PORT, pooled_base_name
from finetune_api.queue import Flavor, PoolAdmission

from .. import builders
from ..builders import names
from ..builders.common import CONFIG_FILE
from ..builders.eval_job import pool_judged_graders
from ..builders.serving import pool_member
from ..builders.workloads import queued_pool
from ..k8s import K8s
from ..progress import TAIL_LINES, latest_progress
from ..queue.views import admitted_flavor
from ..reconcile import JobState, JudgePool, NamespaceUsage, ObservedChildren, ServingState, pod_state
from ..reconcile.decide import AFTER_TRAINING
from ..reconcile.observed import ready_service_url
from ..reconcile.pool import serving_everywhere
from ..settings import OperatorSettings
from .executor import Executor
from .indexes import Indexes
from .api_keys import ApiKeyMissing, ApiKeys
from .canary import CanaryReader
from .job_cache import JobCache, Key
from .pools import PoolController, pool_key
from .smoke import smoke_request

log = logging.getLogger("finetune_operator.job")
JUDGED_PHASES = ("Validating", "Training", "Evaluating")
"""Phases whose next step checks the pool judge (`reconcile.decide.judge_refusal`)."""


class Observer:
    """Builds `ObservedChildren` for `reconcile.decide`; reads the trainer's log at most every progress interval."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, executor: Executor, indexes: Indexes,
                 cache: JobCache, pools: PoolController, api_keys: ApiKeys) -> None:
        self.k8s = k8s
        self.canary = CanaryReader(k8s, executor)
        self.cache = cache
        self.pools = pools
        self.api_keys = api_keys
        self.settings = settings
        self.executor = executor
        self.indexes = indexes
        self.progress_read: dict[Key, float] = {}

    def forget(self, key: Key) -> None:
        self.progress_read.pop(key, None)
        self.canary.forget(key)

    def _namespace_usage(self, ns: str, name: str) -> NamespaceUsage:
        """The other jobs of the namespace that have started and not ended, from this process's cache (a
        job created in the same instant as another may not see it: the caps are per reconcile)."""
        started = []
        for (job_ns, job_name), body in list(self.cache.items()):
            phase = (body.get("status") or {}).get("phase") or "Pending"
            if job_ns == ns and job_name != name and phase != "Pending" and phase not in TERMINAL_PHASES:
                started.append(FineTuneJob.model_validate(body).spec.resources)
        return NamespaceUsage(jobs=len(started), gpus=sum(r.nodes * r.gpus_per_node for r in started))

    def _flavor(self, job: FineTuneJob) -> Flavor | None:
        """The flavor the embedded queue admitted the job to."""
        queue = job.status.queue if job.status else None
        return admitted_flavor(self.indexes.queue(job.spec.queue.name), queue.flavor if queue else None)

    async def observe(self, job: FineTuneJob) -> ObservedChildren:
        ns, name = job.metadata.namespace or "", job.metadata.name
        status = job.status
        phase = status.phase if status else "Pending"
        jobs = {j.name: j for j in self.indexes.children(ns, name, job.metadata.uid or "")}
        queue = self.indexes.queue(job.spec.queue.name)
        grace = (((queue or {}).get("spec") or {}).get("preemption") or {}).get("gracePeriodSeconds")
        observed = ObservedChildren(jobs=jobs, flavor=self._flavor(job), eviction_grace_seconds=grace)
        attempt = (status.attempts.count - 1) if status else -1
        if self.settings.queue_mode == "kueue" and attempt >= 0:
            observed = dataclasses.replace(observed, workload=self.indexes.workload(ns, names.train_job_name(name, attempt)))
        if phase == "Training" and attempt >= 0:
            observed = dataclasses.replace(observed, progress=await self._progress(job, jobs.get(
                names.train_job_name(name, attempt))))
        if phase == "Pending" and ns in self.settings.namespace_caps:
            observed = dataclasses.replace(observed, namespace_usage=self._namespace_usage(ns, name))
        if phase in JUDGED_PHASES and job.spec.evaluation.enabled and pool_judged_graders(job):
            observed = dataclasses.replace(observed, judge_pool=await self._judge_pool(job, jobs))
        if phase == "Training" or phase in AFTER_TRAINING:  # every phase that may start deploying
            observed = dataclasses.replace(observed, pool=self._pool_admission(job))
        if phase == "Deploying":
            observed = dataclasses.replace(observed, serving=await self._serving(job))
        if phase == "Serving" and _canary_analyzing(job):
            observed = dataclasses.replace(observed, canary=await self.canary.read(job))
        generation = job.metadata.generation or 1
        if status and (status.observed_generation or 0) < generation and phase in AFTER_TRAINING:
            observed = dataclasses.replace(observed, config_spec=await self._config_spec(ns, name))
        return observed

    def _pool_admission(self, job: FineTuneJob) -> PoolAdmission | None:
        """The admission of the job's adapter pool, from the status of the queue that charges pools."""
        queue_name, pool = queued_pool(self.settings), pool_key(job)
        if queue_name is None or pool is None:
            return None
        queue = self.indexes.queue(queue_name)
        if queue is None:
            return PoolAdmission(namespace=pool[0], name=pool[1], message=(
                f"FineTuneQueue {queue_name} (the operator's jobs.adapterPool.queue) does not exist"))
        for record in (queue.get("status") or {}).get("pools") or []:
            if (record.get("namespace"), record.get("name")) == pool:
                return PoolAdmission.model_validate(record)
        return PoolAdmission(namespace=pool[0], name=pool[1], message=f"waiting for FineTuneQueue {queue_name}'s next cycle")

    async def _progress(self, job: FineTuneJob, train: JobState | None) -> ProgressEvent | None:
        """The rank-0 trainer's latest progress line, read at most every progress interval."""
        key = (job.metadata.namespace or "", job.metadata.name)
        loop = asyncio.get_running_loop()
        if train is None or loop.time() - self.progress_read.get(key, -1e9) < self.settings.progress_interval_seconds - 1:
            return None
        rank0 = next((p for p in train.pods if p.index in (0, None) and p.phase == "Running"), None)
        if rank0 is None:
            return None
        self.progress_read[key] = loop.time()
        try:
            tail = await self.executor.call(self.k8s.pod_log_tail, key[0], rank0.name, None, TAIL_LINES)
        except Exception as e:  # noqa: BLE001 - progress is best effort; the phase does not depend on it
            log.info("no progress for %s/%s: %s", *key, e)
            return None
        return latest_progress(tail)

    async def _judge_pool(self, job: FineTuneJob, jobs: dict[str, JobState]) -> JudgePool:
        """The adapter pool of the job's base in its namespace and a ready replica of it. The base's
        digest names the pool: from `status.data`, or from the prepare Job that just reported it."""
        data = job.status.data if job.status else None
        digest = data.model_digest if data else None
        prep = jobs.get(names.prepare_job_name(job.metadata.name))
        found = prep.summary(PrepareSummary) if prep is not None and digest is None else None
        digest = digest or (found.data.model_digest if found and found.data else None)
        pool = names.pool_name(pooled_base_name(job.spec), digest)
        ns = job.metadata.namespace or ""
        slices = await self.executor.call(self.k8s.list, "EndpointSlice", ns, f"kubernetes.io/service-name={pool}")
        url = ready_service_url(pool, ns, slices, VLLM_PORT, self.settings.service_addressing)
        return JudgePool(name=pool, url=url)

    async def _config_spec(self, ns: str, name: str) -> dict[str, Any]:
        cm = await self.executor.call(self.k8s.get, "ConfigMap", ns, names.config_map_name(name))
        try:
            return json.loads(((cm or {}).get("data") or {}).get(CONFIG_FILE) or "{}").get("spec") or {}
        except ValueError:
            return {}

    async def _pods_waiting(self, ns: str, deployment: dict[str, Any]) -> list[str]:
        """Why a Deployment's pods are not ready (container waiting reasons, scheduling), for deadline messages."""
        match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        pods = await self.executor.call(self.k8s.list, "Pod", ns, selector) if selector else []
        return [state.waiting for state in map(pod_state, pods) if state.waiting]

    async def _serving(self, job: FineTuneJob) -> ServingState:
        ns = job.metadata.namespace or ""
        # Only kinds and names are read: the adapter pool's peers change neither.
        objects = builders.build_serving_objects(job, self.settings)
        ready_replicas, waiting, pods_waiting = 0, [], []
        try:  # first: without it no vLLM pod starts (its env names the Secret) and no call is answered
            token = await self.api_keys.get(ns)
        except ApiKeyMissing as e:
            return ServingState(ready=False, message=str(e))
        for obj in objects:
            if obj["kind"] != "Deployment":
                continue
            current = await self.executor.call(self.k8s.get, "Deployment", ns, obj["metadata"]["name"])
            if current is None:
                return ServingState(message="missing")
            want = (current.get("spec") or {}).get("replicas", 1)
            if want == 0 and pool_key(job) is not None and queued_pool(self.settings):
                return ServingState(message="missing")  # a released pool, scaled to 0: the job applies it again
            ready = (current.get("status") or {}).get("readyReplicas") or 0
            if ready < min(want, 1) or (want and ready == 0):
                waiting.append(f"{obj['metadata']['name']} {ready}/{want} ready")
                pods_waiting.extend(await self._pods_waiting(ns, current))
            ready_replicas += ready
        pool = pool_key(job)
        if waiting:
            # A pool's replica turns ready only once it holds every adapter: a refused load is why it waits.
            error = self.pools.load_error(pool, job.metadata.name) if pool is not None else None
            return ServingState(ready=False, ready_replicas=ready_replicas,
                                message="; ".join(waiting) + (f": {error}" if error else ""),
                                pods_waiting="; ".join(dict.fromkeys(pods_waiting)))
        if pool is not None:
            replicas = await self.pools.replicas(pool)
            everywhere, message = serving_everywhere(pool_member(job, self.settings).adapter, replicas)
            ready_replicas = sum(1 for r in replicas if r.container_ready and r.gate_current)
            if not everywhere:
                error = self.pools.load_error(pool, job.metadata.name)
                return ServingState(ready=False, ready_replicas=ready_replicas,
                                    message=f"{message}: {error}" if error else message)
        service = names.serve_name(job.metadata.name)
        slices = await self.executor.call(self.k8s.list, "EndpointSlice", ns, f"kubernetes.io/service-name={service}")
        # no ready endpoint listed yet: the Service's name, which answers once one is
        base = (ready_service_url(service, ns, slices, VLLM_PORT, self.settings.service_addressing)
                or names.service_url(service, ns, VLLM_PORT))
        ok, message = await self.executor.call(smoke_request, base, job.metadata.name, token)
        return ServingState(ready=True, ready_replicas=ready_replicas, smoke_ok=ok, smoke_message=message,
                            endpoint=builders.serving_endpoint(job))


def _canary_analyzing(job: FineTuneJob) -> bool:
    """The job's canary of this generation is still being analysed (its arms' `/metrics` are read)."""
    serving = job.status.serving if job.status else None
    canary = serving.canary if serving else None
    return (job.spec.serving.canary is not None and canary is not None and canary.state == "Analyzing"
            and canary.generation == (job.metadata.generation or 1))

"""The adapter pools' runtime (DESIGN.md §5.2): observe each replica, `reconcile.pool.plan_pool`, act.

A pool is reconciled (serialised per pool) when one of its jobs reconciles after its gates passed,
when a job is deleted, and when one of its pods changes (a restart, a scale-up); a pass that fails
(a replica not answering) comes back after `RETRY_SECONDS`. What the pool must serve is read from the
job cache (the deploying and serving adapter jobs of its base), so a deleted job's adapter is unloaded
even when the operator was down at the time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import VLLM_PORT

from ..builders.children import pooled_jobs
from ..builders.common import LABEL_POOL
from ..builders.serving import pool_member, pool_of
from ..k8s import K8s
from ..reconcile.observed import format_time
from ..reconcile.pool import ADAPTERS_GATE, LoadAdapter, PoolAdapter, Replica, SetGate, UnloadAdapter, plan_pool, replica_of
from ..settings import OperatorSettings
from .api_keys import ApiKeys
from .executor import Executor
from .job_cache import JobCache, Key
from .locks import KeyedLocks
from .timers import Timers
from .vllm_admin import AdapterCallFailed, listed_adapters, load_adapter, unload_adapter

log = logging.getLogger("finetune_operator.pool")
RETRY_SECONDS = 5.0
VLLM_CONTAINER = "vllm"

PoolKey = tuple[str, str]
"""(namespace, pool name)"""


def pool_key(job: FineTuneJob) -> PoolKey | None:
    pool = pool_of(job)
    return (job.metadata.namespace or "", pool) if pool else None


class PoolController:
    """Keeps every ready replica of each adapter pool serving exactly its jobs' adapters."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, executor: Executor, cache: JobCache,
                 api_keys: ApiKeys, on_changed: Callable[[Key], None]) -> None:
        self.k8s = k8s
        self.settings = settings
        self.executor = executor
        self.cache = cache
        self.api_keys = api_keys
        self.on_changed = on_changed
        """Called with each job of a pool whose replicas changed (its Deploying phase looks again)."""
        self.locks = KeyedLocks()
        self.timers = Timers(self._retry)
        self.errors: dict[PoolKey, dict[str, str]] = {}

    def adapters(self, key: PoolKey) -> list[PoolAdapter]:
        ns, pool = key
        return [pool_member(job, self.settings).adapter for job in pooled_jobs(ns, pool, self.cache.bodies())]

    async def replicas(self, key: PoolKey) -> list[Replica]:
        """The pool's pods, each with the adapters it lists when its container is ready."""
        ns, pool = key
        pods = await self.executor.call(self.k8s.list, "Pod", ns, f"{LABEL_POOL}={pool}")
        token = await self.api_keys.get(ns)
        replicas = []
        for replica in filter(None, (replica_of(p, VLLM_CONTAINER, VLLM_PORT) for p in pods)):
            if replica.container_ready and replica.url:
                try:
                    loaded = await self.executor.call(listed_adapters, replica.url, token)
                    replica = dataclasses.replace(replica, loaded=loaded)
                except AdapterCallFailed as e:
                    log.info("pool %s/%s: %s", ns, pool, e)
            replicas.append(replica)
        return replicas

    async def reconcile(self, key: PoolKey) -> None:
        """One pass over every replica of the pool; errors are logged and retried, never raised (a pool
        serves several jobs: one job's reconcile must not fail for another's replica)."""
        async with self.locks(key):
            try:
                changed = await self._reconcile(key)
            except Exception as e:  # noqa: BLE001 - logged and retried: the pool converges on a later pass
                log.warning("pool %s/%s: %s; retrying in %.0fs", *key, e, RETRY_SECONDS)
                self.timers.request(key, RETRY_SECONDS)
                return
        if changed:
            for job in pooled_jobs(key[0], key[1], self.cache.bodies()):
                self.on_changed((key[0], job.metadata.name))

    async def _reconcile(self, key: PoolKey) -> bool:
        """Carry out the plan replica by replica; a call a replica refuses is recorded for the adapter's
        job (its Deploying status shows it), skips that replica's gate, and is retried after
        `RETRY_SECONDS`. True when an action took effect: only then do the pool's jobs look again (a
        refused call reported as a change would re-run the jobs, which re-run the pool, in a hot loop)."""
        ns = key[0]
        adapters = self.adapters(key)
        replicas = await self.replicas(key)
        actions = plan_pool(adapters, replicas)
        token = await self.api_keys.get(ns)
        failed_pods: set[str] = set()
        errors: dict[str, str] = {}
        done = 0
        for action in actions:
            try:
                if isinstance(action, UnloadAdapter):
                    await self.executor.call(unload_adapter, action.url, action.name, token)
                elif isinstance(action, LoadAdapter):
                    await self.executor.call(load_adapter, action.url, action.name, action.path, token)
                elif action.pod in failed_pods:
                    continue
                else:
                    await self.executor.call(self.k8s.patch_pod_condition, ns, action.pod, _gate_condition(action))
            except AdapterCallFailed as e:
                failed_pods.add(action.pod)
                if isinstance(action, LoadAdapter):
                    errors[action.name.split("@", 1)[0]] = str(e)
                log.warning("pool %s/%s: %s", *key, e)
                continue
            done += 1
            log.info("pool %s/%s: %s", *key, action)
        changed = done > 0 or errors != self.errors.get(key, {})
        self.errors[key] = errors
        if failed_pods or any(r.container_ready and r.loaded is None for r in replicas):
            self.timers.request(key, RETRY_SECONDS)
        return changed

    def load_error(self, key: PoolKey, job: str) -> str | None:
        """Why the pool's last pass could not load `job`'s adapter (None: it could, or did not try)."""
        return self.errors.get(key, {}).get(job)

    async def _retry(self, key: object) -> None:
        if isinstance(key, tuple):
            await self.reconcile(key)


def _gate_condition(action: SetGate) -> dict[str, str]:
    return {"type": ADAPTERS_GATE, "status": "True" if action.ready else "False",
            "reason": "AdaptersLoaded" if action.ready else "ContainerNotReady", "message": action.message,
            "lastTransitionTime": format_time(dt.datetime.now(dt.UTC))}

"""The FineTuneJob controller: watch events in, `reconcile.decide` in the middle, API calls out.

Level-triggered and restart-safe: every event (of the job or of a child) reconciles the job from
what the watches show; nothing is remembered that the cluster does not hold. Children are observed
through Kopf indexes (filled from watches before any handler runs), never through extra list calls.
Per job, reconciles are serialised by a lock; `Requeue` actions become timers (retry backoff, progress
refresh, readiness polling). Children go with the job through owner references; the one finalizer
(`reconcile.holds`) keeps a job that may hold source-cache entries until its hold is released.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from finetune_api import FineTuneJob

from ..builders import names
from ..builders.common import LABEL_JOB, LABEL_POOL
from ..k8s import K8s
from ..metrics import Metrics
from ..deadlines import deadline_remaining_seconds
from ..reconcile import decide
from ..reconcile.decide import reconcile_failed, reconcile_recovered
from ..reconcile.failures import classify
from ..reconcile.holds import cache_hold
from ..settings import OperatorSettings
from .actuator import Actuator
from .api_keys import ApiKeys
from .executor import Executor
from .indexes import Indexes
from .job_cache import JobCache, Key, key_of
from .locks import KeyedLocks
from .observe import Observer
from .pools import PoolController, pool_key
from .timers import Backoff, Timers

log = logging.getLogger("finetune_operator.job")
POOL_SYNC_PHASES = ("Deploying", "Serving", "Succeeded")
"""After a reconcile in these phases the job's adapter pool is reconciled too (joined, or left when
serving was disabled)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parent_of(body: Mapping[str, Any]) -> Key | None:
    """The FineTuneJob a child (Job, Pod) belongs to, by its `finetune.dev/job` label."""
    meta = body.get("metadata") or {}
    parent = (meta.get("labels") or {}).get(LABEL_JOB)
    return (meta.get("namespace") or "", parent) if parent else None


def training_job_of(body: Mapping[str, Any]) -> Key | None:
    """The batch Job a Kueue Workload was made for (its owner)."""
    meta = body.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None)
    return (meta.get("namespace") or "", owner["name"]) if owner else None


class JobController:
    """One per operator process: the job cache, locks, timers, and the observe → decide → act loop."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, metrics: Metrics, executor: Executor,
                 indexes: Indexes, clock: Callable[[], dt.datetime] = _now) -> None:
        self.settings = settings
        self.clock = clock
        self.cache = JobCache()
        self.locks = KeyedLocks()
        self.backoff = Backoff()
        self.timers = Timers(self._timer_fired)
        api_keys = ApiKeys(k8s, settings, executor)
        self.pools = PoolController(k8s, settings, executor, self.cache, api_keys,
                                    on_changed=lambda key: self.timers.request(key, 0))
        self.observer = Observer(k8s, settings, executor, indexes, self.cache, self.pools, api_keys)
        self.actuator = Actuator(k8s, settings, metrics, executor, self.cache, self.timers)

    # -- events -------------------------------------------------------------------------------------
    async def on_job_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        if event_type == "DELETED":
            self.forget(key)
            await self._reconcile_pool_of(body)  # unloads the deleted job's adapter
            return
        self.cache.seen(body)
        await self.reconcile(key)

    async def on_pool_pod_event(self, body: Mapping[str, Any]) -> None:
        """An adapter pool's pod changed (started, restarted, became ready): bring it to every adapter."""
        meta = body.get("metadata") or {}
        pool = (meta.get("labels") or {}).get(LABEL_POOL)
        if pool:
            await self.pools.reconcile((meta.get("namespace") or "", pool))

    async def _reconcile_pool_of(self, body: Mapping[str, Any]) -> None:
        """The pool of a job whose gates passed (or that left it): load, unload, gate its replicas."""
        try:
            job = FineTuneJob.model_validate(dict(body))
        except ValueError:
            return
        key = pool_key(job)
        if key is not None and (job.status is None or job.status.phase in POOL_SYNC_PHASES):
            await self.pools.reconcile(key)

    async def on_child_event(self, body: Mapping[str, Any]) -> None:
        key = parent_of(body)
        if key is not None and key in self.cache:
            await self.reconcile(key)

    async def on_workload_event(self, body: Mapping[str, Any]) -> None:
        """Kueue mode: reconcile the job whose current training Job the Workload admits."""
        train = training_job_of(body)
        if train is None:
            return
        for (ns, name), ftj in self.cache.items():
            count = ((ftj.get("status") or {}).get("attempts") or {}).get("count", 0)
            if (ns, names.train_job_name(name, max(count - 1, 0))) == train:
                await self.reconcile((ns, name))

    def forget(self, key: Key) -> None:
        self.cache.forget(key)
        self.locks.forget(key)
        self.backoff.forget(key)
        self.observer.forget(key)
        self.timers.forget(key)

    async def _timer_fired(self, key: Any) -> None:
        if key in self.cache:
            await self.reconcile(key)

    # -- the loop -----------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> None:
        async with self.locks(key):
            body = self.cache.get(key)
            if body is None:
                return
            try:
                job = FineTuneJob.model_validate(dict(body))
            except ValueError as e:
                log.warning("FineTuneJob %s/%s does not parse: %s", *key, e)
                return
            try:
                children = await self.observer.observe(job)
                actions = cache_hold(job, children, self.clock())  # the hold's finalizer before any pod
                if job.metadata.deletion_timestamp is None:
                    actions += decide(job, children, self.clock(), self.settings)
                await self.actuator.run(key, job, actions, children.flavor)
            except Exception as e:  # noqa: BLE001 - every error is classified and reaches the job's status
                await self._failed(key, e)
                return
            self.backoff.forget(key)
            await self._settled(key)
        await self._reconcile_pool_of(self.cache.get(key) or {})

    async def _failed(self, key: Key, error: Exception) -> None:
        """Classify the error (`reconcile.failures.classify`), let `reconcile_failed` say what the user
        sees (condition, Event, `Failed` after the permanent-error budget), retry with backoff."""
        failure = classify(error)
        delay = self.backoff.failed(key)
        log.warning("reconcile of %s/%s failed (%s, %s); retrying in %.0fs", *key, failure.error_class,
                    failure.message, delay)
        try:
            job = FineTuneJob.model_validate(dict(self.cache.get(key) or {}))
            actions = reconcile_failed(job, failure, self.backoff.failures(key), self.clock(), self.settings)
            await self.actuator.run(key, job, actions, None)
        except Exception as e:  # noqa: BLE001 - the status write may meet the same outage; the retry will tell
            log.warning("could not record the failure of %s/%s: %s", *key, e)
        self.timers.request(key, delay)

    async def _settled(self, key: Key) -> None:
        """After a reconcile that went through: clear a failure condition, and come back at the phase's
        deadline (a phase that nothing changes still ends)."""
        body = self.cache.get(key)
        if body is None:
            return
        job = FineTuneJob.model_validate(dict(body))
        try:
            await self.actuator.run(key, job, reconcile_recovered(job, self.clock()), None)
        except Exception as e:  # noqa: BLE001 - the condition is cleared by the next reconcile instead
            log.info("could not clear the failure condition of %s/%s: %s", *key, e)
        remaining = deadline_remaining_seconds(job, self.clock(), self.settings)
        if remaining is not None:
            self.timers.request(key, max(remaining, 0.0) + 1.0)

"""Carries out `reconcile.decide`'s actions in order: renders child kinds with the builders, makes the API
calls, writes status through the status model, posts Events, sets timers and records metrics."""

from __future__ import annotations

import logging
from typing import Any

from finetune_api import FineTuneJob
from finetune_api.job import FineTuneJobStatus
from finetune_api.queue import Flavor

from .. import builders, merge_patch
from ..builders.children import build_child
from ..k8s import K8s, K8sError, namespace_terminating
from ..metrics import Metrics
from ..reconcile import Action, Apply, Create, Delete, DeleteServing, Emit, Observe, PatchStatus, Requeue
from ..reconcile.actions import Child, SetFinalizer
from ..reconcile.holds import CACHE_HOLD_FINALIZER
from ..reconcile.failures import ForeignObject, NotYetCollected, ownership
from ..reconcile.observed import controller_uid
from ..settings import OperatorSettings
from .executor import Executor
from .expectations import CreateExpectations
from .job_cache import JobCache, Key
from .timers import Timers

log = logging.getLogger("finetune_operator.job")
COMPONENT = "finetune-operator"


def status_write(status: FineTuneJobStatus | None, patch: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that stores `status` with `patch` applied, as the status model dumps it: fields the
    model does not declare are not written, and a value of the wrong type fails here, before the API call."""
    current = status.to_api() if status else {}
    desired = FineTuneJobStatus.model_validate(merge_patch.apply(current, patch))
    return merge_patch.diff(current, desired.to_api())


class Actuator:
    """One per controller; `run` carries out one reconcile's actions."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, metrics: Metrics, executor: Executor,
                 cache: JobCache, timers: Timers) -> None:
        self.k8s = k8s
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.cache = cache
        self.timers = timers
        self.expectations = CreateExpectations()

    async def run(self, key: Key, job: FineTuneJob, actions: list[Action], flavor: Flavor | None) -> None:
        """Carry out `actions` for `job`; `flavor` is the admitted one that training is placed on."""
        ns = key[0]
        for action in actions:
            if isinstance(action, Create) and action.child == "release":
                job = await self._release(key, job)
            elif isinstance(action, Create):
                for obj in self._build(action.child, job, flavor, action.attempt, action.judge_url):
                    await self._create_once(obj)
            elif isinstance(action, Apply):
                for obj in self._build(action.child, job, flavor):
                    if not await self._create_checked(obj):
                        meta = obj["metadata"]
                        await self.executor.call(self.k8s.patch, obj["kind"], ns, meta["name"],
                                                 {k: v for k, v in obj.items() if k != "status"})
            elif isinstance(action, Delete):
                await self.executor.call(self.k8s.delete, action.kind, ns, action.name, action.propagation,
                                         action.grace_period_seconds)
                self.expectations.deleted((action.kind, ns, action.name, job.metadata.uid or ""))
            elif isinstance(action, DeleteServing):
                await self._delete_serving(job)
            elif isinstance(action, SetFinalizer):
                job = await self._set_finalizer(key, job, action)
            elif isinstance(action, PatchStatus):
                job = await self._write_status(key, job, action.patch)
            elif isinstance(action, Emit):
                await self._emit(job, action)
            elif isinstance(action, Requeue):
                self.timers.request(key, action.after)
            elif isinstance(action, Observe):
                self.metrics.record(action)

    def _build(self, child: Child, job: FineTuneJob, flavor: Flavor | None,
               attempt: int | None = None, judge_url: str | None = None) -> list[dict[str, Any]]:
        peers = self.cache.bodies() if child == "serving" else ()
        return build_child(child, job, self.settings, attempt, flavor, peers, judge_url)

    async def _create_once(self, obj: dict[str, Any]) -> None:
        """Create, unless this process created it for the same owner moments ago and the watch has not
        shown it yet."""
        meta = obj["metadata"]
        ident = (obj["kind"], meta.get("namespace") or "", meta["name"], controller_uid(meta))
        if self.expectations.pending(ident):
            return
        await self._create_checked(obj)
        self.expectations.created(ident)

    async def _create_checked(self, obj: dict[str, Any]) -> bool:
        """Create `obj` (True), or find that this job already owns it (False); an object of that name that
        is not ours is never taken over (`reconcile.failures.ownership`)."""
        if await self.executor.call(self.k8s.create, obj):
            return True
        meta = obj["metadata"]
        existing = await self.executor.call(self.k8s.get, obj["kind"], meta.get("namespace"), meta["name"])
        if existing is None:
            raise NotYetCollected(f"{obj['kind']} {meta.get('namespace')}/{meta['name']} was deleted while "
                                  "being created; creating it again")
        verdict, message = ownership(existing, obj)
        if verdict == "foreign":
            raise ForeignObject(message)
        if verdict == "previous":
            raise NotYetCollected(message)
        return False

    async def _delete_serving(self, job: FineTuneJob) -> None:
        # Without the pool's peers: they change no kind or name, and add only non-controller
        # owner references, which never match this job's controller reference.
        for obj in builders.build_serving_objects(job, self.settings):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == job.metadata.uid and o.get("controller") for o in owners):
                await self.executor.call(self.k8s.delete, obj["kind"], job.metadata.namespace or "", obj["metadata"]["name"])

    async def _release(self, key: Key, job: FineTuneJob) -> FineTuneJob:
        """Create `<job>-release`. In a namespace being deleted nothing can be created, and the artifacts
        claim holding the cache goes with the namespace: the hold's finalizer is dropped at once."""
        for obj in self._build("release", job, None):
            try:
                await self._create_once(obj)
            except K8sError as e:
                if not namespace_terminating(e):
                    raise
                log.info("%s/%s: namespace is being deleted; the cache hold goes with its claim", *key)
                return await self._set_finalizer(key, job, SetFinalizer(CACHE_HOLD_FINALIZER, False))
        return job

    async def _set_finalizer(self, key: Key, job: FineTuneJob, action: SetFinalizer) -> FineTuneJob:
        """One merge patch of `metadata.finalizers`, conditional on the resourceVersion read (a conflict
        is retried by the next reconcile, never overwrites another writer's finalizers)."""
        current = list(job.metadata.finalizers or [])
        wanted = [f for f in current if f != action.name] + ([action.name] if action.present else [])
        if wanted == current:
            return job
        patch = {"metadata": {"finalizers": wanted or None, "resourceVersion": job.metadata.resource_version}}
        try:
            stored = await self.executor.call(self.k8s.patch, "FineTuneJob", key[0], key[1], patch)
        except K8sError as e:
            if e.status == 404 and not action.present:
                return job  # a stale view of a job whose last finalizer is already gone: it is deleted
            raise
        if not stored or job.metadata.deletion_timestamp:
            return job  # a job being deleted may be gone now; its DELETED event clears the cache
        self.cache.stored(key, stored)
        return FineTuneJob.model_validate(stored)

    async def _write_status(self, key: Key, job: FineTuneJob, patch: dict[str, Any]) -> FineTuneJob:
        write = status_write(job.status, patch)
        if not write:
            return job
        stored = await self.executor.call(self.k8s.patch_status, "FineTuneJob", key[0], key[1], write)
        if not stored:
            return job
        self.cache.stored(key, stored)
        return FineTuneJob.model_validate(stored)

    async def _emit(self, job: FineTuneJob, event: Emit) -> None:
        involved = {"apiVersion": job.api_version, "kind": job.kind, "name": job.metadata.name,
                    "namespace": job.metadata.namespace, "uid": job.metadata.uid}
        try:
            await self.executor.call(self.k8s.post_event, involved, event.type, event.reason, event.message, COMPONENT)
        except Exception as e:  # noqa: BLE001 - an Event that cannot be posted must not undo a transition
            log.warning("event %s for %s not posted: %s", event.reason, job.metadata.name, e)

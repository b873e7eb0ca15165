"""The FineTuneJob controller: watch events in, `reconcile.decide` in the middle, API calls out.

Level-triggered and restart-safe: every event (of the job or of a child) reconciles the job from
what the watches show; nothing is remembered that the cluster does not hold. Children are observed
through Kopf indexes (filled from watches before any handler runs), never through extra list calls.
Per job, reconciles are serialised by a lock; `Requeue` actions become timers (retry backoff, progress
refresh, readiness polling). No finalizer: children go with the job through owner references.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from collections.abc import Callable, Iterable, Mapping

import httpx
import kopf

from .. import builders
from finetune_api import FineTuneJob, GROUP, VERSION
from finetune_api.queue import Flavor
from ..builders import names
from ..builders.common import CONFIG_FILE, LABEL_JOB
from ..k8s import K8s
from ..metrics import Metrics
from ..progress import TAIL_LINES, latest_progress
from ..reconcile import (
    Apply, Create, Delete, DeleteServing, Emit, JobState, ObservedChildren, Observe, PatchStatus, PodState, Requeue,
    ServingState, decide, job_state, pod_state, workload_state,
)
from ..reconcile.decide import AFTER_TRAINING
from ..reconcile.observed import WorkloadState
from ..settings import OperatorSettings

log = logging.getLogger("finetune_operator.job")
Key = tuple[str, str]
COMPONENT = "finetune-operator"
ERROR_BACKOFF_MAX = 60.0
CREATE_EXPECTATION_SECONDS = 30.0
"""A child this process created is not created again for this long: the watch has to catch up first."""
SMOKE_TIMEOUT_SECONDS = 30.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Controller:
    """One per operator process: the latest job bodies, child indexes, locks, timers."""

    def __init__(self, k8s: K8s, settings: OperatorSettings, metrics: Metrics, workers: int = 16,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.k8s = k8s
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.indexes: dict[str, Any] = {}
        self.locks: dict[Key, asyncio.Lock] = {}
        self.timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self.errors: dict[Key, int] = {}
        self.progress_read: dict[Key, float] = {}
        self.created: dict[tuple[str, str, str], float] = {}
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="k8s")

    # -- events -------------------------------------------------------------------------------------
    def phases(self) -> Iterable[str]:
        return [(b.get("status") or {}).get("phase") or "Pending" for b in list(self.bodies.values())]

    def remember(self, indexes: Mapping[str, Any]) -> None:
        """Kopf hands its live index objects to every handler; keep them for timer-driven reconciles."""
        for name in ("ft_child_jobs", "ft_child_pods", "ft_queues", "ft_workloads"):
            if name in indexes:
                self.indexes[name] = indexes[name]

    async def on_job_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self.forget(key)
            return
        known = self.bodies.get(key)
        if known is None or _rv(body) >= _rv(known) or meta.get("uid") != (known.get("metadata") or {}).get("uid"):
            self.bodies[key] = dict(body)
        await self.reconcile(key)

    async def on_child_event(self, body: Mapping[str, Any]) -> None:
        key = _parent(body)
        if key is not None and key in self.bodies:
            await self.reconcile(key)

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.locks.pop(key, None)
        self.errors.pop(key, None)
        self.progress_read.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer:
            timer[1].cancel()

    def requeue(self, key: Key, after: float) -> None:
        """Reconcile `key` again in `after` seconds (the earliest request wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(after, 0.0)
        current = self.timers.get(key)
        if current and current[0] <= when and not current[1].cancelled():
            return
        if current:
            current[1].cancel()
        handle = loop.call_at(when, lambda: asyncio.ensure_future(self._timer_fired(key)))
        self.timers[key] = (when, handle)

    async def _timer_fired(self, key: Key) -> None:
        self.timers.pop(key, None)
        if key in self.bodies:
            await self.reconcile(key)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- the loop -----------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> None:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            body = self.bodies.get(key)
            if body is None:
                return
            try:
                job = FineTuneJob.model_validate(dict(body))
            except ValueError as e:
                log.warning("FineTuneJob %s/%s does not parse: %s", *key, e)
                return
            try:
                children = await self.observe(job)
                actions = decide(job, children, self.clock(), self.settings)
                await self.execute(key, job, actions)
                self.errors.pop(key, None)
            except Exception as e:  # noqa: BLE001 - an API hiccup must not stop the job's reconciles
                failures = self.errors[key] = self.errors.get(key, 0) + 1
                delay = min(2.0 ** failures, ERROR_BACKOFF_MAX)
                log.warning("reconcile of %s/%s failed (%s); retrying in %.0fs", *key, e, delay)
                self.requeue(key, delay)

    async def observe(self, job: FineTuneJob) -> ObservedChildren:
        """What the watches show of the job's children, plus the few reads a phase needs."""
        ns, name = job.metadata.namespace or "", job.metadata.name
        status = job.status
        phase = status.phase if status else "Pending"
        jobs = {j.name: j for j in self._child_jobs(ns, name)}
        queue_spec = self._queue_spec(job.spec.queue.name)
        grace = ((queue_spec or {}).get("preemption") or {}).get("gracePeriodSeconds")
        observed = ObservedChildren(jobs=jobs, flavor=self._admitted_flavor(job), eviction_grace_seconds=grace)
        attempt = (status.attempts.count - 1) if status else -1
        if self.settings.queue_mode == "kueue" and attempt >= 0:
            observed = dataclasses.replace(observed, workload=self._workload(ns, names.train_job_name(name, attempt)))
        if phase == "Training" and attempt >= 0:
            observed = dataclasses.replace(observed, progress=await self._progress(job, jobs.get(
                names.train_job_name(name, attempt))))
        if phase == "Deploying":
            observed = dataclasses.replace(observed, serving=await self._serving(job))
        generation = job.metadata.generation or 1
        if status and (status.observed_generation or 0) < generation and phase in AFTER_TRAINING:
            observed = dataclasses.replace(observed, config_spec=await self._config_spec(ns, name))
        return observed

    def _child_jobs(self, ns: str, name: str) -> list[JobState]:
        jobs_index = self.indexes.get("ft_child_jobs") or {}
        pods_index = self.indexes.get("ft_child_pods") or {}
        out = []
        for state in list(jobs_index.get((ns, name), [])):
            pods = tuple(sorted(pods_index.get((ns, state.name), []), key=lambda p: p.name))
            out.append(dataclasses.replace(state, pods=pods))
        return out

    def _queue_spec(self, queue: str) -> dict[str, Any] | None:
        found = list((self.indexes.get("ft_queues") or {}).get(queue, []))
        return found[0] if found else None

    def _workload(self, ns: str, train_job: str) -> WorkloadState | None:
        found = list((self.indexes.get("ft_workloads") or {}).get((ns, train_job), []))
        return found[0] if found else None

    async def _progress(self, job: FineTuneJob, train: JobState | None):
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
            tail = await self.call(self.k8s.pod_log_tail, key[0], rank0.name, None, TAIL_LINES)
        except Exception as e:  # noqa: BLE001 - progress is best effort; the phase does not depend on it
            log.info("no progress for %s/%s: %s", *key, e)
            return None
        return latest_progress(tail)

    async def _config_spec(self, ns: str, name: str) -> dict[str, Any]:
        cm = await self.call(self.k8s.get, "ConfigMap", ns, names.config_map_name(name))
        try:
            return json.loads(((cm or {}).get("data") or {}).get(CONFIG_FILE) or "{}").get("spec") or {}
        except ValueError:
            return {}

    async def _serving(self, job: FineTuneJob) -> ServingState:
        ns = job.metadata.namespace or ""
        # Only kinds and names are read: the adapter pool's peers change neither (see DeleteServing below).
        objects = builders.build_serving_objects(job, self.settings)
        ready_replicas, waiting = 0, []
        for obj in objects:
            if obj["kind"] != "Deployment":
                continue
            current = await self.call(self.k8s.get, "Deployment", ns, obj["metadata"]["name"])
            if current is None:
                return ServingState(message="missing")
            want = (current.get("spec") or {}).get("replicas", 1)
            ready = (current.get("status") or {}).get("readyReplicas") or 0
            if ready < min(want, 1) or (want and ready == 0):
                waiting.append(f"{obj['metadata']['name']} {ready}/{want} ready")
            ready_replicas += ready
        if waiting:
            return ServingState(ready=False, ready_replicas=ready_replicas, message="; ".join(waiting))
        service = names.serve_name(job.metadata.name)
        slices = await self.call(self.k8s.list, "EndpointSlice", ns, f"kubernetes.io/service-name={service}")
        base = smoke_base_url(service, ns, slices)
        ok, message = await self.call(smoke_request, base, job.metadata.name)
        return ServingState(ready=True, ready_replicas=ready_replicas, smoke_ok=ok, smoke_message=message,
                            endpoint=builders.serving_endpoint(job))

    # -- carrying out ---------------------------------------------------------------------------------
    def render(self, child: str, job: FineTuneJob, attempt: int | None = None) -> list[dict[str, Any]]:
        """The child objects of `child`, built by `finetune_operator.builders`."""
        s = self.settings
        if child == "config":
            return [builders.build_config_map(job, s)]
        if child == "prepare":
            return [builders.build_prepare_job(job, s)]
        if child == "train-service":
            return [builders.build_training_service(job, s)]
        if child == "train":
            flavor = self._admitted_flavor(job)
            return [builders.build_training_job(job, s, attempt or 0, flavor)]
        if child == "eval":
            return [builders.build_eval_job(job, s)]
        if child == "serving":
            return self.render_serving(job)
        raise ValueError(f"unknown child {child!r}")

    def _admitted_flavor(self, job: FineTuneJob) -> Flavor | None:
        queue = job.status.queue if job.status else None
        spec = self._queue_spec(job.spec.queue.name)
        if not queue or not queue.flavor or not spec:
            return None
        return next((Flavor.model_validate(f) for f in spec.get("flavors") or [] if f.get("name") == queue.flavor), None)

    def render_serving(self, job: FineTuneJob) -> list[dict[str, Any]]:
        """Serving objects; in adapter mode the pool also carries the other adapters served on its base."""
        pool = []
        if job.spec.serving.mode == "adapter" and job.spec.serving.canary is None:
            base = builders.serving.base_model_name(job.spec)
            for (ns, other), body in list(self.bodies.items()):
                if ns != job.metadata.namespace or other == job.metadata.name:
                    continue
                if ((body.get("status") or {}).get("phase")) not in ("Deploying", "Serving"):
                    continue
                try:
                    peer = FineTuneJob.model_validate(dict(body))
                except ValueError:
                    continue
                if peer.spec.serving.mode == "adapter" and builders.serving.base_model_name(peer.spec) == base:
                    pool.append(builders.pool_adapter(peer, self.settings))
        return builders.build_serving_objects(job, self.settings, pool)

    async def execute(self, key: Key, job: FineTuneJob, actions: list) -> None:
        ns = key[0]
        for action in actions:
            if isinstance(action, Create):
                for obj in self.render(action.child, job, action.attempt):
                    await self._create_once(obj)
            elif isinstance(action, Apply):
                for obj in self.render(action.child, job):
                    await self.call(self.k8s.apply, obj)
            elif isinstance(action, Delete):
                await self.call(self.k8s.delete, action.kind, ns, action.name, action.propagation,
                                action.grace_period_seconds)
            elif isinstance(action, DeleteServing):
                # Without the pool's peers: they change no kind or name, and add only non-controller
                # owner references, which never match this job's controller reference.
                for obj in builders.build_serving_objects(job, self.settings):
                    owners = obj["metadata"].get("ownerReferences") or []
                    if any(o.get("uid") == job.metadata.uid and o.get("controller") for o in owners):
                        await self.call(self.k8s.delete, obj["kind"], ns, obj["metadata"]["name"])
            elif isinstance(action, PatchStatus):
                stored = await self.call(self.k8s.patch_status, "FineTuneJob", ns, key[1], action.patch)
                known = self.bodies.get(key)
                if stored and known is not None and _rv(stored) >= _rv(known):
                    self.bodies[key] = stored
                job = FineTuneJob.model_validate(stored) if stored else job
            elif isinstance(action, Emit):
                await self._emit(job, action)
            elif isinstance(action, Requeue):
                self.requeue(key, action.after)
            elif isinstance(action, Observe):
                self.metrics.record(action)

    async def _create_once(self, obj: dict[str, Any]) -> None:
        """Create, unless this process created it moments ago and the watch has not shown it yet."""
        loop = asyncio.get_running_loop()
        ident = (obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        if loop.time() - self.created.get(ident, -1e9) < CREATE_EXPECTATION_SECONDS:
            return
        await self.call(self.k8s.create, obj)
        self.created[ident] = loop.time()
        if len(self.created) > 10000:
            horizon = loop.time() - CREATE_EXPECTATION_SECONDS
            self.created = {k: t for k, t in self.created.items() if t >= horizon}

    async def _emit(self, job: FineTuneJob, event: Emit) -> None:
        involved = {"apiVersion": job.api_version, "kind": job.kind, "name": job.metadata.name,
                    "namespace": job.metadata.namespace, "uid": job.metadata.uid}
        try:
            await self.call(self.k8s.post_event, involved, event.type, event.reason, event.message, COMPONENT)
        except Exception as e:  # noqa: BLE001 - an Event that cannot be posted must not undo a transition
            log.warning("event %s for %s not posted: %s", event.reason, job.metadata.name, e)


# -- smoke request --------------------------------------------------------------------------------------

def smoke_base_url(service: str, namespace: str, endpoint_slices: list[dict[str, Any]], port: int = 8000) -> str:
    """Where to send the smoke request: a ready endpoint of the Service when one is listed (works where
    Service IPs are not routed, e.g. the local pod runner), else the Service's cluster DNS name."""
    for es in endpoint_slices:
        ports = es.get("ports") or []
        target = next((p.get("port") for p in ports if p.get("name") == "http"), None) or (
            ports[0].get("port") if ports else None)
        for ep in es.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addresses = ep.get("addresses") or []
            if addresses and target:
                host = addresses[0]
                host = f"[{host}]" if ":" in host else host
                return f"http://{host}:{target}"
    return f"http://{service}.{namespace}.svc:{port}"


def smoke_request(base_url: str, model: str, timeout: float = SMOKE_TIMEOUT_SECONDS) -> tuple[bool, str]:
    """One chat completion from `model`; ok only when a completion comes back from that model."""
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4, "temperature": 0}
    try:
        response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout)
    except httpx.HTTPError as e:
        return False, f"smoke request to {base_url} failed: {e}"
    if response.status_code != 200:
        return False, f"smoke request: HTTP {response.status_code}: {response.text[:200]}"
    try:
        answer = response.json()
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False, f"smoke request: no completion in {response.text[:200]}"
    served = answer.get("model")
    if served not in (model, None) and not str(served).startswith(f"{model}@"):
        return False, f"smoke request answered by model {served!r}, not {model!r}"
    return True, f"model {model} answered {content[:40]!r}"


# -- Kopf registration ------------------------------------------------------------------------------------

CONTROLLER: Controller | None = None


def controller() -> Controller:
    if CONTROLLER is None:
        raise RuntimeError("the controller is created by the operator's startup handler (finetune_operator.main)")
    return CONTROLLER


def _parent(body: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = body.get("metadata") or {}
    parent = (meta.get("labels") or {}).get(LABEL_JOB)
    return (meta.get("namespace") or "", parent) if parent else None


@kopf.index("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT})
def ft_child_jobs(body: kopf.Body, **_: Any) -> dict[Key, JobState] | None:
    """Child Jobs by their FineTuneJob (reduced: the index holds only what decisions read)."""
    parent = _parent(body)
    return {parent: job_state(dict(body))} if parent else None


@kopf.index("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
def ft_child_pods(body: kopf.Body, **_: Any) -> dict[Key, PodState] | None:
    """Pods by their batch Job (`batch.kubernetes.io/job-name`)."""
    meta = body.get("metadata") or {}
    job_name = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name") or (meta.get("labels") or {}).get("job-name")
    return {(meta.get("namespace") or "", job_name): pod_state(dict(body))} if job_name else None


@kopf.index(GROUP, VERSION, "finetunequeues")
def ft_queues(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """Queue specs by name: admitted flavors and the preemption grace period."""
    return {name: dict(spec)}


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    ctl = controller()
    ctl.remember(kwargs)
    await ctl.on_job_event(event.get("type"), body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
async def child_event(body: kopf.Body, **kwargs: Any) -> None:
    ctl = controller()
    ctl.remember(kwargs)
    await ctl.on_child_event(body)


def register_kueue(registry: kopf.OperatorRegistry | None = None) -> None:
    """Kueue mode only (the Workload CRD exists only where Kueue runs): mirror training Workloads.

    No version in the selectors: Kopf watches the group's preferred version (v1beta2 on Kueue v0.17, where
    v1beta1 is deprecated; v1beta1 on releases without v1beta2); the fields mirrored are the same in both.
    Explicit ids: Kopf names handlers and indexes by `__qualname__` (`register_kueue.<locals>.…`), and
    `Controller.remember` looks the index up as `ft_workloads`.
    """

    @kopf.index("kueue.x-k8s.io", "workloads", id="ft_workloads", registry=registry)
    def ft_workloads(body: kopf.Body, **_: Any) -> dict[Key, WorkloadState] | None:
        meta = body.get("metadata") or {}
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None)
        return {(meta.get("namespace") or "", owner["name"]): workload_state(dict(body))} if owner else None

    @kopf.on.event("kueue.x-k8s.io", "workloads", id="workload_event", registry=registry)
    async def workload_event(body: kopf.Body, **kwargs: Any) -> None:
        ctl = controller()
        ctl.remember(kwargs)
        meta = body.get("metadata") or {}
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None)
        for (ns, name), ftj in list(ctl.bodies.items()):
            count = ((ftj.get("status") or {}).get("attempts") or {}).get("count", 0)
            if owner and ns == meta.get("namespace") and owner["name"] == names.train_job_name(name, max(count - 1, 0)):
                await ctl.reconcile((ns, name))

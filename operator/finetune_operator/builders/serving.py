"""Serving with vLLM (DESIGN.md §5): Deployments, Services, canary and the shared adapter pool.

Topology:
- merged: Deployment + Service `<job>-serve` serving `<output>/merged` as `<job>@<generation>` and `<job>`
  (a full fine-tune serves `<output>/model`).
- adapter: one pool Deployment + Service per base model and namespace (`vllm-<base>`) serving the base
  under its name; the operator loads every passing adapter into each replica at run time
  (`reconcile.pool`, `runtime.pools`), so the pod template does not depend on the adapters and an
  adapter joining restarts nothing. Size, image and placement come from `settings.adapter_pool`. The
  job's own Service `<job>-serve` selects the pool's pods. The pool has one non-controller
  ownerReference per adapter job, so the garbage collector removes it with the last of them.
- canary: the tuned arm `<job>-serve` (merged model, or base + this adapter) and a base arm `<job>-base`
  (the tuned arm's engine flags, LoRA's included, serving the base) that answers to the base's name and to `<job>`, both labelled `finetune.dev/model-group: <job>`
  behind the stable Service `<job>` (each arm has its own Service too: the shadow grading and the
  HTTPRoute address one arm); `canary_split` sets the replica ratio. With Gateway API an
  HTTPRoute attached to that Service (GAMMA) splits requests by weight instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune_api import API_VERSION, FineTuneJob
from finetune_api.job import ServingSpec
from finetune_api.resolved import ArtifactLayout, claim_of, uri_to_path
from finetune_api.sources import parse_source
from finetune_api.contract.sources import cache_path
from ..settings import OperatorSettings
from .common import (
    ANNOTATION_GENERATION,
    LABEL_ARM,
    LABEL_MANAGED_BY,
    LABEL_MODEL_GROUP,
    LABEL_PHASE,
    LABEL_POOL,
    MANAGED_BY,
    claim_volumes,
    container_security_context,
    env_list,
    gib,
    labels,
    object_meta,
    placement,
    pod_security_context,
    scratch_env,
    scratch_volumes,
    with_scratch_storage,
    serving_placement,
)
from .canary import canary_route, canary_split
from .kueue import DEPLOYMENT_INTEGRATION, kueue_labels
from .names import base_arm_name, pool_name, serve_name, service_url, stable_service_name
from .resolve import namespace, output_uri, source_cache_dir
from finetune_api.contract.vllm import (API_KEY_ENV, API_KEY_SECRET, API_KEY_SECRET_KEY, RUNTIME_LORA_ENV, VLLM_COMMAND, VLLM_PORT, LoraCapacity, LoraModule, base_model_name, pooled_base_name,
                                        default_max_model_len, same_engine, vllm_args, vllm_env)
from ..reconcile.pool import ADAPTERS_GATE, PoolAdapter

from .vllm import cpu_kv_cache_gib, vllm_pod_resources

STARTUP_BUDGET_SECONDS = 1800
"""Time a replica may take to load its model before the kubelet restarts it."""
PRE_STOP_SLEEP_SECONDS = 15
"""Lets Service endpoints drop the pod before vLLM stops taking requests."""
TERMINATION_GRACE_SECONDS = 60
DRAIN_SECONDS = TERMINATION_GRACE_SECONDS - PRE_STOP_SLEEP_SECONDS - 15
"""vLLM's `--shutdown-timeout`: requests in flight at SIGTERM finish (within the grace left after the
pre-stop sleep, with a margin before SIGKILL) instead of failing with a 500."""


# ----------------------------------------------------------------------------- model references
def _model_source(job: FineTuneJob, settings: OperatorSettings) -> str:
    """What vLLM's `--model` gets: the mounted path, or for a hub or S3 model the copy the fetch step
    put in the source cache (through the output's `sources/model` link; vLLM never downloads)."""
    if parse_source(job.spec.model.uri).remote:
        return str(ArtifactLayout(uri_to_path(output_uri(job, settings), settings.pvc_mount_root)).fetched("model"))
    return uri_to_path(job.spec.model.uri, settings.pvc_mount_root)


def _pooled_model_source(job: FineTuneJob, settings: OperatorSettings) -> str:
    """The pool's `--model`, the same whichever of its jobs applies it: a hub or S3 base is read from its
    cache entry (content-addressed by the identity in `status.data.sources`), not through one job's link."""
    data = job.status.data if job.status else None
    identity = data.sources.get("model") if data else None
    if parse_source(job.spec.model.uri).remote and identity:
        return cache_path(source_cache_dir(settings), identity)
    return _model_source(job, settings)


def tuned_model_dir(job: FineTuneJob, settings: OperatorSettings) -> str:
    """The merged model (what was evaluated) or, for a full fine-tune, the trained model itself."""
    layout = ArtifactLayout(uri_to_path(output_uri(job, settings), settings.pvc_mount_root))
    return str(layout.model if job.spec.adapter.type == "full" else layout.merged)


def adapter_dir(job: FineTuneJob, settings: OperatorSettings) -> str:
    return str(ArtifactLayout(uri_to_path(output_uri(job, settings), settings.pvc_mount_root)).adapter)


def served_model_names(job: FineTuneJob) -> list[str]:
    """Names clients may call: `<job>@<generation>` (a version clients can pin; it tells versions apart
    in metrics) and the alias `<job>`."""
    name = job.metadata.name
    return [f"{name}@{job.metadata.generation or 1}", name]


def serving_endpoint(job: FineTuneJob) -> str:
    """The OpenAI-compatible base URL for `status.serving.endpoint`."""
    name = job.metadata.name
    service = stable_service_name(name) if job.spec.serving.canary else serve_name(name)
    return f"{service_url(service, namespace(job), VLLM_PORT)}/v1"


# ----------------------------------------------------------------------------- adapter pool
def pool_of(job: FineTuneJob) -> str | None:
    """The adapter pool that serves `job` (adapter mode without a canary): keyed by its base model's
    content digest from the Validating phase, named after the base."""
    serving = job.spec.serving
    if serving.mode != "adapter" or serving.canary is not None:
        return None
    return _pool_name(job)


def _pool_name(job: FineTuneJob) -> str:
    data = job.status.data if job.status else None
    return pool_name(pooled_base_name(job.spec), data.model_digest if data else None)



@dataclass(frozen=True)
class PoolMember:
    """A passing adapter job in its base model's pool: what vLLM loads, who owns the pool, what it mounts."""

    adapter: PoolAdapter
    uid: str | None
    claims: tuple[str, ...]
    """PVC claims the pool must mount for this adapter and its base."""


def pool_member(job: FineTuneJob, settings: OperatorSettings) -> PoolMember:
    """The pool entry of a job whose adapter passed its gates."""
    adapter = PoolAdapter(job=job.metadata.name, generation=job.metadata.generation or 1, path=adapter_dir(job, settings))
    return PoolMember(adapter=adapter, uid=job.metadata.uid, claims=tuple(_job_claims(job, settings, with_output=True)))


def serving_max_model_len(job: FineTuneJob) -> int:
    """`--max-model-len`: the spec's, else what the Validating phase derived from the base model and
    the data (`status.data.maxModelLen`), so a default never exceeds the model's positions."""
    return default_max_model_len(job.spec, job.status.data if job.status else None)


# ----------------------------------------------------------------------------- pods
@dataclass
class _Server:
    """One vLLM Deployment's content, before it becomes objects."""

    args: list[str]
    serving: ServingSpec
    claims: list[str]
    replicas: int
    env: dict[str, str] = field(default_factory=dict)
    gpu_resource_name: str | None = None
    """None: the job's `spec.resources.gpuResourceName`."""
    placement: tuple[dict[str, str] | None, list[dict[str, Any]]] | None = None
    """nodeSelector and tolerations; None: the serving spec's (`serving_placement`)."""
    readiness_gates: tuple[str, ...] = ()


def _probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _pod_spec(job: FineTuneJob, settings: OperatorSettings, server: _Server) -> dict[str, Any]:
    serving = server.serving
    cpu, memory = serving.cpu, serving.memory
    engine_env = vllm_env(settings.cpu_runtime, cpu_kv_cache_gib(gib(memory or "8Gi")), max(serving.gpus, 1))
    env = {**scratch_env(), **engine_env, **server.env}
    claim_vols, claim_mounts = claim_volumes(server.claims, settings.pvc_mount_root)
    scratch_vols, scratch_mounts = scratch_volumes(f"{2 * max(serving.gpus, 1)}Gi", settings.scratch_size)
    container = {
        "name": "vllm",
        "image": serving.image or settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(VLLM_COMMAND),
        "args": server.args,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": env_list(env) + api_key_env(settings),
        "resources": with_scratch_storage(
            vllm_pod_resources(serving.gpus, server.gpu_resource_name or job.spec.resources.gpu_resource_name,
                               cpu, memory), settings),
        "volumeMounts": claim_mounts + scratch_mounts,
        "securityContext": container_security_context(),
        "startupProbe": _probe(10, STARTUP_BUDGET_SECONDS // 10, 5),
        "readinessProbe": _probe(5, 3, 5),
        "livenessProbe": _probe(15, 4, 10),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": claim_vols + scratch_vols,
    }
    if server.readiness_gates:
        spec["readinessGates"] = [{"conditionType": gate} for gate in server.readiness_gates]
    spec.update(placement(settings, *(server.placement or serving_placement(serving, job.spec.resources))))
    return spec


def api_key_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """vLLM's bearer key from the namespace's Secret (an env var: it stays out of the pod's args)."""
    if not settings.serving_api_key:
        return []
    ref = {"name": API_KEY_SECRET, "key": API_KEY_SECRET_KEY}
    return [{"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": ref}}]


def _deployment(meta: dict[str, Any], selector: dict[str, str], pod_labels: dict[str, str], annotations: dict[str, str],
                replicas: int, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": STARTUP_BUDGET_SECONDS + 600,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def _service(meta: dict[str, Any], selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _job_claims(job: FineTuneJob, settings: OperatorSettings, with_output: bool) -> list[str]:
    """The claims a vLLM pod mounts: the model's, and the output's (the adapter, the merged model, or a
    fetched base model's link and the source cache it points into)."""
    remote = parse_source(job.spec.model.uri).remote
    uris = [job.spec.model.uri] + ([output_uri(job, settings)] if with_output or remote else [])
    claims = [*map(claim_of, uris), settings.artifacts_pvc if remote else None]
    return list(dict.fromkeys(c for c in claims if c))


def _common_flags(job: FineTuneJob, settings: OperatorSettings, serving: ServingSpec, max_model_len: int) -> dict[str, Any]:
    return {
        "dtype": job.spec.model.dtype,
        "max_model_len": max_model_len,
        "cpu": settings.cpu_runtime,
        "tensor_parallel_size": max(serving.gpus, 1),
        "drain_seconds": DRAIN_SECONDS,
        "extra": serving.args,
    }


def _tuned_server(job: FineTuneJob, settings: OperatorSettings, replicas: int) -> _Server:
    serving = job.spec.serving
    flags = _common_flags(job, settings, serving, serving_max_model_len(job))
    if serving.mode == "merged":
        args = vllm_args(tuned_model_dir(job, settings), served_model_names(job), **flags)
        return _Server(args, serving, _job_claims(job, settings, with_output=True), replicas)
    model = _model_source(job, settings)
    base = base_model_name(job.spec, job.metadata.name)
    lora = LoraModule(job.metadata.name, adapter_dir(job, settings), base)
    args = vllm_args(model, [base], lora_modules=[lora], lora_rank=job.spec.adapter.r, **flags)
    return _Server(args, serving, _job_claims(job, settings, with_output=True), replicas)


def _base_server(job: FineTuneJob, settings: OperatorSettings, tuned: _Server, replicas: int) -> _Server:
    """The canary's base arm: its tuned arm's engine (LoRA's flags too, in adapter mode: both arms pay
    the same per-request cost) serving the base, under the base's name (first: metrics) and `<job>` (clients)."""
    names = [base_model_name(job.spec, job.metadata.name), job.metadata.name]
    args = same_engine(tuned.args, _model_source(job, settings), names)
    return _Server(args, job.spec.serving, _job_claims(job, settings, with_output=False), replicas)


def _arm_deployment(job: FineTuneJob, settings: OperatorSettings, name: str, arm: str, server: _Server) -> dict[str, Any]:
    job_name = job.metadata.name
    group = {LABEL_MODEL_GROUP: job_name, LABEL_ARM: arm}
    pod_labels = labels(job_name, "serve", group)
    selector = {k: pod_labels[k] for k in (LABEL_MANAGED_BY, "finetune.dev/job", LABEL_PHASE, LABEL_ARM)}
    annotations = {ANNOTATION_GENERATION: str(job.metadata.generation or 1)}
    pod = _pod_spec(job, settings, server)
    queued = kueue_labels(job, settings, DEPLOYMENT_INTEGRATION, job.spec.serving.gpus)
    return _deployment(object_meta(job, name, "serve", {**group, **queued}), selector, pod_labels, annotations,
                       server.replicas, pod)


# ----------------------------------------------------------------------------- the pool
def _pool_server(job: FineTuneJob, settings: OperatorSettings, claims: list[str]) -> _Server:
    """The pool's vLLM: the base model with LoRA sized by the admin (`settings.adapter_pool`), no adapter
    named at start (the operator loads them at run time), and a readiness gate the operator sets once a
    replica holds every adapter. Nothing here depends on which jobs the pool serves, except the claims."""
    pool = settings.adapter_pool
    base = pooled_base_name(job.spec)
    model = _pooled_model_source(job, settings)
    capacity = LoraCapacity(max_loras=pool.max_loras, max_cpu_loras=pool.max_cpu_loras, max_lora_rank=pool.max_lora_rank)
    args = vllm_args(model, [base], dtype=job.spec.model.dtype, max_model_len=pool.max_model_len, cpu=settings.cpu_runtime,
                     tensor_parallel_size=max(pool.gpus, 1), lora_capacity=capacity, drain_seconds=DRAIN_SECONDS)
    serving = ServingSpec(replicas=pool.replicas, gpus=pool.gpus, image=pool.image, cpu=pool.cpu, memory=pool.memory)
    return _Server(args, serving, claims, pool.replicas, env=dict(RUNTIME_LORA_ENV),
                   gpu_resource_name=pool.gpu_resource_name, placement=(pool.node_selector or None, list(pool.tolerations)),
                   readiness_gates=(ADAPTERS_GATE,))


def _pool_objects(job: FineTuneJob, settings: OperatorSettings, peers: list[PoolMember]) -> list[dict[str, Any]]:
    mine = pool_member(job, settings)
    members = sorted({m.adapter.job: m for m in [*peers, mine]}.values(), key=lambda m: m.adapter.job)
    name = _pool_name(job)
    claims = sorted({c for m in members for c in m.claims})
    server = _pool_server(job, settings, claims)

    pool_labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PHASE: "serve", LABEL_POOL: name}
    owners = [_pool_owner(m) for m in members if m.uid]
    meta: dict[str, Any] = {"name": name, "namespace": namespace(job), "labels": dict(pool_labels)}
    if owners:
        meta["ownerReferences"] = owners
    pod = _pod_spec(job, settings, server)
    pool = settings.adapter_pool
    queued = kueue_labels(job, settings, DEPLOYMENT_INTEGRATION, pool.gpus, queue=pool.queue) if pool.queue else {}
    deployment = _deployment({**meta, "labels": {**pool_labels, **queued}}, dict(pool_labels), dict(pool_labels), {},
                             server.replicas, pod)
    return [deployment, _service(meta, dict(pool_labels))]


def _pool_owner(member: PoolMember) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "name": member.adapter.job,
        "uid": member.uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }


# ----------------------------------------------------------------------------- entry point
def build_serving_objects(
    job: FineTuneJob, settings: OperatorSettings, pool_peers: list[PoolMember] | None = None
) -> list[dict[str, Any]]:
    """Every serving object of `job`; `pool_peers` are the other passing adapters on its base in
    its namespace (the job itself is added when missing): they own the pool and name its claims."""
    name = job.metadata.name
    serving = job.spec.serving
    if serving.canary is None:
        if serving.mode == "adapter":
            pool = _pool_objects(job, settings, pool_peers or [])
            selector = pool[0]["spec"]["selector"]["matchLabels"]
            return pool + [_service(object_meta(job, serve_name(name), "serve"), dict(selector))]
        deployment = _arm_deployment(job, settings, serve_name(name), "tuned", _tuned_server(job, settings, serving.replicas))
        return [deployment, _service(object_meta(job, serve_name(name), "serve"), _selector(deployment))]

    route = canary_route(job, settings)
    tuned_server = _tuned_server(job, settings, route.tuned_replicas)
    tuned = _arm_deployment(job, settings, serve_name(name), "tuned", tuned_server)
    base = _arm_deployment(job, settings, base_arm_name(name), "base", _base_server(job, settings, tuned_server, route.base_replicas))
    group = {LABEL_MODEL_GROUP: name}
    objects = [
        tuned,
        base,
        _service(object_meta(job, serve_name(name), "serve"), _selector(tuned)),
        _service(object_meta(job, base_arm_name(name), "serve"), _selector(base)),
        _service(object_meta(job, stable_service_name(name), "serve", group), {**group, LABEL_PHASE: "serve"}),
    ]
    if settings.gateway_api:
        objects.append(_http_route(job, route.weight))
    return objects


def _selector(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["selector"]["matchLabels"])


def _http_route(job: FineTuneJob, weight: int) -> dict[str, Any]:
    """Request-level split, attached to the stable Service (Gateway API for service meshes, GAMMA)."""
    name = job.metadata.name
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": object_meta(job, stable_service_name(name), "serve", {LABEL_MODEL_GROUP: name}),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": stable_service_name(name), "port": VLLM_PORT}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": serve_name(name), "port": VLLM_PORT, "weight": weight},
                        {"name": base_arm_name(name), "port": VLLM_PORT, "weight": 100 - weight},
                    ]
                }
            ],
        },
    }


__all__ = [
    "PoolMember",
    "base_model_name",
    "build_serving_objects",
    "canary_split",
    "default_max_model_len",
    "serving_max_model_len",
    "pool_member",
    "pool_of",
    "served_model_names",
    "serving_endpoint",
]

"""Operator-wide settings: what the platform admin sets once through Helm values (as env vars).

The Helm chart sets these `FT_*` environment variables on the operator Deployment; `ftctl render`
and tests build an `OperatorSettings` directly.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.alias_generators import to_camel

from finetune_api.common import QUANTITY_PATTERN
from finetune_api.resolved import PVC_MOUNT_ROOT

TRAINER_IMAGE = "ghcr.io/finetune-operator/trainer:0.1.0"
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"


class AdapterPoolSettings(BaseModel):
    """The admin's definition of every adapter pool (one per base model and namespace): its size,
    image and placement never come from the jobs it serves, so an adapter joining never changes the pod
    template (no restart; DESIGN.md §5.2). Camel-case keys in `FT_ADAPTER_POOL` (the Helm values')."""

    model_config = {"alias_generator": to_camel, "populate_by_name": True, "extra": "forbid"}

    replicas: int = Field(default=1, ge=0, le=100)
    gpus: int = Field(default=1, ge=0, le=16)
    """Accelerators per replica (tensor parallel size)."""
    gpu_resource_name: str = "nvidia.com/gpu"
    cpu: str | None = None
    memory: str | None = None
    image: str | None = None
    """vLLM image; defaults to `vllm_image`."""
    max_loras: int = Field(default=4, ge=1, le=256)
    """`--max-loras`: adapters in one batch."""
    max_cpu_loras: int = Field(default=32, ge=1, le=4096)
    """`--max-cpu-loras`: adapters held in CPU memory; a request to an evicted one reloads it from disk."""
    max_lora_rank: int = Field(default=64, ge=1, le=512)
    """`--max-lora-rank`: a job whose `spec.adapter.r` is larger is served merged instead."""
    max_model_len: int | None = Field(default=None, ge=16)
    """`--max-model-len`; unset: the base model's own limit."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    queue: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    """The queue that admits each pool's replicas, charged once for the pool, never per adapter job it
    serves: embedded mode, the FineTuneQueue (the pool's Deployment is created once admitted; its adapter
    jobs wait in Deploying meanwhile); Kueue mode with the `deployment` integration, the LocalQueue in each
    pool's namespace. Unset, or a pool without GPUs: pools are not queued (capacity the admin reserves)."""


class NamespaceCaps(BaseModel):
    """What one namespace's jobs may hold at once (Helm `policy.namespaces.<ns>`); unset: no cap."""

    model_config = {"alias_generator": to_camel, "populate_by_name": True, "extra": "forbid"}

    max_concurrent_jobs: int | None = Field(default=None, ge=0)
    """Jobs between Validating and their end (Succeeded, Failed, Rejected)."""
    max_gpus: int | None = Field(default=None, ge=0)
    """Training GPUs (nodes × gpusPerNode) of those jobs."""


class OperatorSettings(BaseModel):
    """Defaults the operator applies to every FineTuneJob."""

    trainer_image: str = TRAINER_IMAGE
    """Image of the prepare/train/evaluate pods (CUDA torch + our trainer)."""
    vllm_image: str = VLLM_IMAGE
    """Image of the serving Deployments."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    artifacts_pvc: str = "finetune-artifacts"
    """Claim that holds artifacts when a job names no `spec.output.uri` (`<namespace>/<job>` under it)."""
    source_cache_max_bytes: int | None = Field(default=None, ge=0)
    """Size limit of the source cache on the artifacts claim (`.source-cache`); the least recently used
    entries no job holds are evicted by each fetch step. Unset: no limit."""
    pvc_mount_root: str = PVC_MOUNT_ROOT
    """Where claims are mounted in the pods (`pvc://claim/path` → `<root>/claim/path`)."""
    queue_mode: Literal["embedded", "kueue", "none"] = "embedded"
    """Who admits training, and evaluation and serving that request accelerators: our FineTuneQueue,
    Kueue (children labelled, Jobs created suspended), or nobody."""
    kueue_integrations: list[str] = Field(default_factory=lambda: ["batch/job"])
    """Kueue mode: the `integrations.frameworks` the cluster's Kueue configuration enables, as Kueue
    names them. `batch/job` (Kueue's default) admits training and evaluation Jobs; `deployment` (Kueue
    v0.15+, beta) also admits each serving replica as a plain Pod: only then do serving Deployments get
    `kueue.x-k8s.io/queue-name` (a label Kueue does not act on would promise a quota that is not kept)."""
    watch_namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty means the whole cluster."""
    service_account: str = "finetune-trainer"
    """ServiceAccount of the job's pods (it needs no API rights; tokens are not mounted)."""
    cpu_runtime: bool = False
    """Clusters without accelerators (tests, CPU clusters): CPU torch settings, vLLM CPU flags."""
    progress_interval_seconds: int = 20
    """How often the operator refreshes training progress from the trainer's log."""
    adapter_pool: AdapterPoolSettings = Field(default_factory=AdapterPoolSettings)
    """Size, image and placement of the adapter pools (JSON in `FT_ADAPTER_POOL`)."""
    serving_api_key: bool = True
    """Serving endpoints require the API key in each namespace's Secret `finetune-serving-api-key` (key
    `api-key`; vLLM `--api-key`), which the admin provides; the operator's own calls to them use it."""
    service_addressing: Literal["dns", "endpoints"] = "dns"
    """How the operator's own clients name a Service (the smoke request, the default judge's URL given to
    evaluation Jobs): `dns`, its cluster DNS name `<service>.<namespace>.svc`, as any in-cluster client
    calls it; `endpoints`, the address of one ready endpoint, only for an operator run outside the cluster
    that cannot resolve or route Service names (development, or the test runner without a pod bridge)."""
    gateway_api: bool = False
    """Use HTTPRoute weights for canaries (set when Gateway API CRDs are present)."""
    priority_class_name: str | None = None
    """Kubernetes PriorityClass for training pods."""
    pod_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels added to every pod the operator creates (a dedicated node pool; JSON in the env)."""
    pod_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations added to every pod the operator creates (JSON list in the env)."""
    scratch_size: str = Field(default="50Gi", pattern=QUANTITY_PATTERN)
    """Bound of each pod's `/tmp` scratch (caches, hub downloads, torch extensions): the emptyDir's
    `sizeLimit` and each container's `ephemeral-storage` limit, so a full scratch evicts that pod, not
    the node's other tenants."""
    scratch_request: str = Field(default="2Gi", pattern=QUANTITY_PATTERN)
    """Each container's `ephemeral-storage` request (what the scheduler reserves on the node's disk)."""

    namespace_caps: dict[str, NamespaceCaps] = Field(default_factory=dict)
    """Per-namespace caps, checked when a job starts: one past a cap is `Rejected` with the rule's name
    (JSON in the env: `{"team-a": {"maxConcurrentJobs": 3, "maxGpus": 16}}`)."""
    max_preemptions: int = Field(default=20, ge=0)
    """Preemptions (pod disruptions, queue evictions, Kueue suspensions) a job may take before it is
    `Failed` with `PreemptionsExhausted`; each is counted in `status.attempts.preemptions`."""
    reconcile_error_attempts: int = Field(default=5, ge=1)
    """Reconciles that may fail with a permanent error (a builder error, a 4xx, a foreign object) before
    the job is `Failed`; transient API errors (5xx, 429, timeouts) retry with backoff without limit."""
    validating_deadline_seconds: int = Field(default=3600, ge=1)
    """Validating may last this long (the prepare Job; `spec.deadlines.validatingSeconds` overrides)."""
    training_deadline_seconds: int = Field(default=86400, ge=1)
    """A training attempt's `activeDeadlineSeconds` when the data report gives no token count."""
    training_deadline_floor_seconds: int = Field(default=3600, ge=1)
    """The least an estimated training deadline allows (image pulls, model download, checkpoints)."""
    training_tokens_per_gpu_second: float = Field(default=200.0, gt=0)
    """A deliberately low training throughput for the estimate (tokens × epochs / throughput × margin)."""
    training_deadline_margin: float = Field(default=3.0, ge=1.0)
    """Factor on the estimated training time."""
    evaluating_deadline_seconds: int = Field(default=21600, ge=1)
    """Evaluating may last this long (`spec.deadlines.evaluatingSeconds` overrides)."""
    uploading_deadline_seconds: int = Field(default=3600, ge=1)
    """Uploading may last this long (the upload Job; `spec.deadlines.uploadingSeconds` overrides)."""
    deploying_deadline_seconds: int = Field(default=3600, ge=1)
    """Deploying may last this long before a never-ready vLLM fails the job (`spec.deadlines.deployingSeconds`)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        """Read `FT_<FIELD>` variables (upper-case field names); string lists are comma-separated,
        maps and lists of objects are JSON."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"FT_{name.upper()}")
            if raw is None:
                continue
            if field.annotation in (dict[str, str], list[dict[str, Any]], dict[str, NamespaceCaps], AdapterPoolSettings):
                try:
                    values[name] = json.loads(raw) if raw.strip() else field.get_default(call_default_factory=True)
                except ValueError as error:
                    raise ValueError(f"FT_{name.upper()}: not valid JSON ({error})") from error
            elif field.annotation == list[str]:
                values[name] = [part.strip() for part in raw.split(",") if part.strip()]
            elif field.annotation is bool:
                values[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            else:
                values[name] = raw
        return cls.model_validate(values)

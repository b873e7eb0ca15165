"""Pieces every child object shares: metadata, owner reference, pod security, volumes and env.

Pods run non-root with every capability dropped and no service-account token (training pods get no
API rights, DESIGN.md §4). Writable scratch (`HOME`, caches, torch extensions) is an emptyDir at
`/tmp`, so images need not be writable for user 1000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from finetune_api import API_VERSION, FineTuneJob
from finetune_api.common import Toleration
from finetune_api.job import ResourcesSpec, ServingSpec
from ..settings import OperatorSettings
from .names import config_map_name

MANAGED_BY = "finetune-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "finetune.dev/job"
LABEL_PHASE = "finetune.dev/phase"
LABEL_MODEL_GROUP = "finetune.dev/model-group"
LABEL_ARM = "finetune.dev/arm"
LABEL_POOL = "finetune.dev/pool"
ANNOTATION_GENERATION = "finetune.dev/generation"

CONFIG_DIR = "/etc/finetune"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
SCRATCH_DIR = "/tmp"
TERMINATION_LOG = "/dev/termination-log"
RUN_AS_USER = 65532


def job_labels(job_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: job_name}


def labels(job_name: str, phase: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels every child carries: who manages it, which job, which phase."""
    return {**job_labels(job_name), LABEL_PHASE: phase, **(extra or {})}


def owner_reference(job: FineTuneJob, controller: bool = True) -> dict[str, Any]:
    """The reference that makes the garbage collector delete a child with its FineTuneJob."""
    if not job.metadata.uid:
        raise ValueError(f"FineTuneJob {job.metadata.name}: metadata.uid is needed for an ownerReference")
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def object_meta(job: FineTuneJob, name: str, phase: str, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Metadata of a child. Without a uid (`ftctl render` offline) there is no ownerReference to write."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": job.metadata.namespace or "default",
        "labels": labels(job.metadata.name, phase, extra_labels),
        "annotations": {ANNOTATION_GENERATION: str(job.metadata.generation or 1)},
    }
    if job.metadata.uid:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
    }


def placement(settings: OperatorSettings, node_selector: Mapping[str, str] | None,
              tolerations_: list[dict[str, Any]] | None) -> dict[str, Any]:
    """nodeSelector and tolerations of a pod: the job's own plus the operator-wide ones."""
    out: dict[str, Any] = {}
    selector = {**(node_selector or {}), **settings.pod_node_selector}
    if selector:
        out["nodeSelector"] = selector
    tols = [*(tolerations_ or []), *settings.pod_tolerations]
    if tols:
        out["tolerations"] = tols
    return out


def env_list(values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Plain env vars in insertion order (stable output for idempotent builds)."""
    return [{"name": k, "value": v} for k, v in values.items()]


def tolerations(items: Iterable[Toleration] | None) -> list[dict[str, Any]]:
    return [t.to_api() for t in items or []]


def serving_placement(serving: ServingSpec, res: ResourcesSpec) -> tuple[dict[str, str] | None, list[dict[str, Any]]]:
    """nodeSelector and tolerations of a vLLM-like pod (serving, evaluation): the serving spec's own,
    else the training ones when it uses accelerators (GPU nodes), else none."""
    node_selector = serving.node_selector or (res.node_selector if serving.gpus else None)
    return node_selector, tolerations(serving.tolerations or (res.tolerations if serving.gpus else None))


def claim_volumes(
    claims: list[str], mount_root: str, writable: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One volume per PVC claim, mounted at `<root>/<claim>`; read-only unless the pod writes to it."""
    writable = set(writable)
    volumes, mounts = [], []
    for i, claim in enumerate(claims):
        name = f"pvc-{i}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": claim not in writable}})
        mounts.append({"name": name, "mountPath": f"{mount_root.rstrip('/')}/{claim}", "readOnly": claim not in writable})
    return volumes, mounts


def scratch_volumes(shm_size: str, scratch_size: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Memory-backed `/dev/shm` (NCCL, dataloader workers) and a writable `/tmp` for caches, both bounded."""
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
        {"name": "scratch", "emptyDir": {"sizeLimit": scratch_size}},
    ]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": SCRATCH_DIR}]
    return volumes, mounts


def config_volume(job_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": "config", "configMap": {"name": config_map_name(job_name), "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}]}}
    return volume, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}


def scratch_env() -> dict[str, str]:
    """Caches on the writable scratch volume (the image's home is not writable for user 1000)."""
    return {
        "HOME": SCRATCH_DIR,
        "XDG_CACHE_HOME": f"{SCRATCH_DIR}/.cache",
        "HF_HOME": f"{SCRATCH_DIR}/hf",
        "TORCH_EXTENSIONS_DIR": f"{SCRATCH_DIR}/torch_extensions",
        "TRITON_CACHE_DIR": f"{SCRATCH_DIR}/triton",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity as a number (kubernetes' own parser)."""
    from kubernetes.utils import parse_quantity as parse

    return parse(value)


_SUFFIX_FACTORS = {
    **{s: Decimal(1024) ** (6 - i) for i, s in enumerate(("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"))},
    **{s: Decimal(1000) ** (6 - i) for i, s in enumerate(("E", "P", "T", "G", "M", "k"))},
}
_SUFFIXED_FROM = Decimal(2**20)
"""Smaller whole numbers (GPU and cpu counts) are written plain."""


def format_quantity(value: Decimal | int) -> str:
    """A short exact Kubernetes quantity: `8`, `500m`, `64Gi`, `60G` (the inverse of `parse_quantity`)."""
    from kubernetes.utils.quantity import format_quantity as _format_with_suffix

    value = Decimal(value)
    if value != value.to_integral_value():
        return _format_with_suffix(value, "m")
    written = [str(int(value))]
    if value >= _SUFFIXED_FROM:
        written += [_format_with_suffix(value, s) for s, f in _SUFFIX_FACTORS.items() if value % f == 0]
    return min(written, key=len)


def gib(value: str) -> float:
    return float(parse_quantity(value) / (1 << 30))


def with_scratch_storage(resources: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """A container's resources plus its `ephemeral-storage` request and limit (the scratch bound)."""
    return {
        "requests": {**resources.get("requests", {}), "ephemeral-storage": settings.scratch_request},
        "limits": {**resources.get("limits", {}), "ephemeral-storage": settings.scratch_size},
    }


def pod_resources(gpus: int, gpu_resource: str, cpu: str | None, memory: str | None,
                  cpu_per_gpu: int, memory_gib_per_gpu: int, cpu_only: tuple[str, str]) -> dict[str, Any]:
    """Requests from the spec or per-GPU defaults (`cpu_only` without GPUs); memory limit = request,
    so RAM is never overcommitted; GPUs are requested and limited alike."""
    cpu = cpu or (str(cpu_per_gpu * gpus) if gpus else cpu_only[0])
    memory = memory or (f"{memory_gib_per_gpu * gpus}Gi" if gpus else cpu_only[1])
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if gpus:
        requests[gpu_resource] = limits[gpu_resource] = str(gpus)
    return {"requests": requests, "limits": limits}

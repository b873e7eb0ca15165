"""What each of a FineTuneJob's workloads requests, all at once: the training gang, the evaluation Job's
pod, the serving replicas (DESIGN.md §6).

The per-pod requests are the pod builders' own (`training_resources`, `eval_resources`,
`vllm_pod_resources`), read as numbers, so the quota a job holds is exactly what its pods request.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from finetune_api.job import FineTuneJobSpec, ResourcesSpec
from ..settings import AdapterPoolSettings, OperatorSettings
from .canary import canary_split
from .common import parse_quantity
from .eval_job import eval_resources
from .training_job import training_resources
from .vllm import vllm_pod_resources

Workload = Literal["Training", "Evaluation", "Serving"]


def _resources_of(spec: FineTuneJobSpec | ResourcesSpec) -> ResourcesSpec:
    return spec.resources if isinstance(spec, FineTuneJobSpec) else spec


def pod_requests(spec: FineTuneJobSpec | ResourcesSpec) -> dict[str, Decimal]:
    """Requests of one training pod, as the training Job's pod template states them: cpu, memory and
    GPUs of `gpuResourceName` (defaults per DESIGN)."""
    return _as_numbers(training_resources(_resources_of(spec)))


def job_requests(spec: FineTuneJobSpec | ResourcesSpec) -> dict[str, Decimal]:
    """Requests of the whole training gang: nodes × the per-pod requests. Admitted all at once or not at all."""
    nodes = _resources_of(spec).nodes
    return {name: value * nodes for name, value in pod_requests(spec).items()}


def workload_requests(spec: FineTuneJobSpec, workload: Workload) -> dict[str, Decimal]:
    """Requests of one of the job's workloads, all of it at once: the training gang; the evaluation Job's
    pod; the serving replicas (a canary's two arms at their largest split, 1 + 1 for one replica). An
    adapter served by its base's shared pool asks nothing: the pool is charged once, not per adapter."""
    if workload == "Training":
        return job_requests(spec)
    if workload == "Evaluation":
        return _as_numbers(eval_resources(spec))
    serving = spec.serving
    if serving.canary is not None:
        replicas = sum(canary_split(serving.replicas, serving.canary.weight))
    elif serving.mode == "adapter":
        return {}
    else:
        replicas = serving.replicas
    per_replica = _as_numbers(vllm_pod_resources(serving.gpus, spec.resources.gpu_resource_name, serving.cpu, serving.memory))
    return {name: value * replicas for name, value in per_replica.items()} if replicas else {}


def pool_requests(pool: AdapterPoolSettings) -> dict[str, Decimal]:
    """Requests of one adapter pool, all of it at once: its replicas × each replica's requests, as the
    pool Deployment's pod template states them (the admin's size, whatever the adapters it serves)."""
    per_replica = _as_numbers(vllm_pod_resources(pool.gpus, pool.gpu_resource_name, pool.cpu, pool.memory))
    return {name: value * pool.replicas for name, value in per_replica.items()} if pool.replicas else {}


def queued_pool(settings: OperatorSettings) -> str | None:
    """The FineTuneQueue that admits the adapter pools in embedded mode (`adapter_pool.queue`), when the
    pools request accelerators; None: pools start at once, uncharged (CPU pools, or no queue named)."""
    pool = settings.adapter_pool
    if settings.queue_mode != "embedded" or pool.queue is None:
        return None
    return pool.queue if pool_requests(pool).get(pool.gpu_resource_name, Decimal(0)) > 0 else None


def grows(spec: FineTuneJobSpec, held: dict[str, str]) -> dict[str, Decimal]:
    """What the serving's requests exceed its held admission by (`held`: status.queue.resources): a
    `spec.serving` change that asks more replicas asks the queue for the difference."""
    have = {name: parse_quantity(value) for name, value in held.items()}
    wanted = workload_requests(spec, "Serving")
    return {name: value - have.get(name, Decimal(0)) for name, value in wanted.items() if value > have.get(name, Decimal(0))}


def queued_workload(spec: FineTuneJobSpec, workload: Workload) -> bool:
    """Whether the workload waits for admission: training always; evaluation and serving only when they
    request accelerators (CPU-only ones start at once, as they always did)."""
    if workload == "Training":
        return True
    gpu = spec.resources.gpu_resource_name
    return workload_requests(spec, workload).get(gpu, Decimal(0)) > 0


def _as_numbers(resources: dict[str, dict[str, str]]) -> dict[str, Decimal]:
    return {name: parse_quantity(value) for name, value in resources["requests"].items()}

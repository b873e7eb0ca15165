"""Requests, limits and KV-cache size of the vLLM pods (serving and evaluation); the server flags
themselves are part of the API contract (`finetune_api.contract.vllm`), shared with `ftctl`."""

from __future__ import annotations

from typing import Any

from .common import pod_resources


def vllm_pod_resources(gpus: int, gpu_resource: str, cpu: str | None, memory: str | None) -> dict[str, Any]:
    """Requests and limits of a vLLM pod (serving and evaluation alike): 4 CPU and 32 GiB per GPU,
    2 CPU and 8 GiB on CPU-only nodes, unless the spec names them."""
    return pod_resources(gpus, gpu_resource, cpu, memory, 4, 32, ("2", "8Gi"))


def cpu_kv_cache_gib(memory_gib: float | None) -> int:
    """`VLLM_CPU_KVCACHE_SPACE`: a quarter of the pod's memory, at least 1 GiB (unset, vLLM sizes it
    from the node's RAM and the pod is OOM-killed)."""
    return max(1, int(memory_gib / 4)) if memory_gib else 1

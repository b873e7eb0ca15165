"""What a FineTuneJob's training asks of a queue: per-pod and whole-gang resource requests.

The per-pod requests are the training-pod builder's own (`builders.training_job.training_resources`),
read as numbers, so the quota a job holds is exactly what its pods request (DESIGN.md §6).
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import format_quantity as _format_with_suffix
from kubernetes.utils.quantity import parse_quantity

from finetune_api.job import FineTuneJobSpec, ResourcesSpec
from ..builders.training_job import training_resources

_SUFFIX_FACTORS = {
    **{s: Decimal(1024) ** (6 - i) for i, s in enumerate(("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"))},
    **{s: Decimal(1000) ** (6 - i) for i, s in enumerate(("E", "P", "T", "G", "M", "k"))},
}
_SUFFIXED_FROM = Decimal(2**20)
"""Smaller whole numbers (GPU and cpu counts) are written plain."""


def _resources_of(spec: FineTuneJobSpec | ResourcesSpec) -> ResourcesSpec:
    return spec.resources if isinstance(spec, FineTuneJobSpec) else spec


def pod_requests(spec: FineTuneJobSpec | ResourcesSpec) -> dict[str, Decimal]:
    """Requests of one training pod, as the training Job's pod template states them: cpu, memory and
    GPUs of `gpuResourceName` (defaults per DESIGN)."""
    requests = training_resources(_resources_of(spec))["requests"]
    return {name: parse_quantity(value) for name, value in requests.items()}


def job_requests(spec: FineTuneJobSpec | ResourcesSpec) -> dict[str, Decimal]:
    """Requests of the whole training gang: nodes × the per-pod requests. Admitted all at once or not at all."""
    nodes = _resources_of(spec).nodes
    return {name: value * nodes for name, value in pod_requests(spec).items()}


def format_quantity(value: Decimal | int) -> str:
    """A short exact Kubernetes quantity: `8`, `500m`, `64Gi`, `60G`."""
    value = Decimal(value)
    if value != value.to_integral_value():
        return _format_with_suffix(value, "m")
    written = [str(int(value))]
    if value >= _SUFFIXED_FROM:
        written += [_format_with_suffix(value, s) for s, f in _SUFFIX_FACTORS.items() if value % f == 0]
    return min(written, key=len)


def to_milli(value: Decimal | str | int) -> int:
    """A quantity in thousandths, rounded up: exact integer arithmetic for the admission cycle."""
    quantity = parse_quantity(value) if isinstance(value, str) else Decimal(value)
    return int((quantity * 1000).to_integral_value(rounding="ROUND_CEILING"))


def from_milli(value: int) -> Decimal:
    """Inverse of `to_milli`."""
    return Decimal(value) / 1000

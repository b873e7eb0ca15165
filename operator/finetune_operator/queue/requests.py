"""Quantities for the admission cycle: exact integer thousandths and short Kubernetes spellings. What
each workload requests is the builders' own (`builders.workloads`, re-exported here)."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import format_quantity as _format_with_suffix
from kubernetes.utils.quantity import parse_quantity

from ..builders.workloads import Workload, job_requests, pod_requests, queued_workload, workload_requests

__all__ = ["Workload", "format_quantity", "from_milli", "job_requests", "pod_requests", "queued_workload", "to_milli",
           "workload_requests"]

_SUFFIX_FACTORS = {
    **{s: Decimal(1024) ** (6 - i) for i, s in enumerate(("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"))},
    **{s: Decimal(1000) ** (6 - i) for i, s in enumerate(("E", "P", "T", "G", "M", "k"))},
}
_SUFFIXED_FROM = Decimal(2**20)
"""Smaller whole numbers (GPU and cpu counts) are written plain."""


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

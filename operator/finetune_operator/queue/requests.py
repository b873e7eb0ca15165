"""Quantities for the admission cycle: exact integer thousandths and short Kubernetes spellings. What
each workload requests is the builders' own (`builders.workloads`, re-exported here)."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from ..builders.common import format_quantity
from ..builders.workloads import Workload, job_requests, pod_requests, queued_workload, workload_requests

__all__ = ["Workload", "format_quantity", "from_milli", "job_requests", "pod_requests", "queued_workload", "to_milli",
           "workload_requests"]


def to_milli(value: Decimal | str | int) -> int:
    """A quantity in thousandths, rounded up: exact integer arithmetic for the admission cycle."""
    quantity = parse_quantity(value) if isinstance(value, str) else Decimal(value)
    return int((quantity * 1000).to_integral_value(rounding="ROUND_CEILING"))


def from_milli(value: int) -> Decimal:
    """Inverse of `to_milli`."""
    return Decimal(value) / 1000

"""A job's requests: per-pod defaults from DESIGN and whole-gang totals."""

from decimal import Decimal

import pytest

from finetune_api.job import ResourcesSpec
from finetune_operator.queue.requests import format_quantity, job_requests, pod_requests, to_milli

pytestmark = pytest.mark.unit


def test_gpu_pods_default_to_8_cpu_and_64gi_per_gpu() -> None:
    spec = ResourcesSpec(nodes=2, gpus_per_node=4)
    assert pod_requests(spec) == {"nvidia.com/gpu": 4, "cpu": 32, "memory": 4 * 64 * 2**30}
    assert job_requests(spec) == {"nvidia.com/gpu": 8, "cpu": 64, "memory": 8 * 64 * 2**30}


def test_cpu_training_defaults_to_2_cpu_and_8gi_and_asks_for_no_gpu() -> None:
    assert job_requests(ResourcesSpec(gpus_per_node=0)) == {"cpu": 2, "memory": 8 * 2**30}


def test_explicit_quantities_and_gpu_resource_names_are_parsed() -> None:
    spec = ResourcesSpec(nodes=3, gpus_per_node=1, gpu_resource_name="amd.com/gpu", cpu="1500m", memory="20G")
    assert job_requests(spec) == {"amd.com/gpu": 3, "cpu": Decimal("4.5"), "memory": 60 * 10**9}


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal(8), "8"), (Decimal("0.5"), "500m"), (Decimal(64 * 2**30), "64Gi"), (Decimal(60 * 10**9), "60G"), (Decimal(1024), "1024"), (Decimal(12345678901), "12345678901")],
)
def test_quantities_are_written_in_canonical_form(value: Decimal, text: str) -> None:
    assert format_quantity(value) == text


def test_milli_units_round_up_so_quota_is_never_under_counted() -> None:
    assert to_milli("1m") == 1 and to_milli("1.0001") == 1001 and to_milli("64Gi") == 64 * 2**30 * 1000

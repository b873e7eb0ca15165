"""Every object for every example validates against Kubernetes 1.32, carries the job's labels and
owner, and building twice gives equal objects."""

from __future__ import annotations

import pytest

from finetune_api import FineTuneJob
from finetune_operator.builders import render_job
from finetune_operator.builders.common import LABEL_MANAGED_BY, LABEL_PHASE, MANAGED_BY
from finetune_operator.settings import OperatorSettings

from .conftest import make_job, validate

pytestmark = pytest.mark.unit

SETTINGS = [
    OperatorSettings(),
    OperatorSettings(queue_mode="kueue", cpu_runtime=True, gateway_api=True, priority_class_name="training"),
]


def _objects(job: FineTuneJob, settings: OperatorSettings) -> list[tuple[str, dict]]:
    return [(phase, obj) for phase, objs in render_job(job, settings).items() for obj in objs]


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "kueue-cpu-gateway"])
def test_every_example_object_is_valid_kubernetes(example_job: FineTuneJob, settings: OperatorSettings) -> None:
    objects = _objects(example_job, settings)
    assert {"prepare", "train"} <= {phase for phase, _ in objects}
    for phase, obj in objects:
        if obj["kind"] != "HTTPRoute":
            validate(obj)
        meta = obj["metadata"]
        assert meta["labels"][LABEL_MANAGED_BY] == MANAGED_BY
        assert meta["labels"][LABEL_PHASE] == phase
        assert meta["namespace"] == example_job.metadata.namespace
        owners = meta["ownerReferences"]
        assert all(o["kind"] == "FineTuneJob" and o["uid"] for o in owners)
        assert [o["controller"] for o in owners].count(True) <= 1


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"adapter": {"type": "full"}, "resources": {"nodes": 4, "gpusPerNode": 8, "deepspeed": {"zeroStage": 3}}, "serving": {"mode": "merged"}},
        {"method": {"type": "dpo"}, "datasets": {"train": {"uri": "pvc://d/p.jsonl", "format": "preference"}}},
        {"adapter": {"type": "qlora", "quantization": {"bits": 4}}, "resources": {"launcher": "accelerate", "nodes": 2}},
        {"serving": {"mode": "merged", "canary": {"weight": 25}, "replicas": 4}},
        {"serving": {"mode": "adapter", "canary": {"weight": 10}, "replicas": 10}},
    ],
    ids=["sft-lora", "zero3-full", "dpo", "qlora-accelerate", "merged-canary", "adapter-canary"],
)
def test_model_built_jobs_are_valid_kubernetes(spec: dict) -> None:
    for settings in SETTINGS:
        for _, obj in _objects(make_job(**spec), settings):
            if obj["kind"] != "HTTPRoute":
                validate(obj)


def test_building_twice_gives_identical_objects(example_job: FineTuneJob) -> None:
    for settings in SETTINGS:
        assert render_job(example_job, settings) == render_job(example_job.model_copy(deep=True), settings)


def test_render_without_a_uid_omits_owner_references() -> None:
    job = make_job()
    job.metadata.uid = None
    for _, obj in _objects(job, OperatorSettings()):
        assert "ownerReferences" not in obj["metadata"]


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "kueue-cpu-gateway"])
def test_every_pod_has_bounded_disk(example_job: FineTuneJob, settings: OperatorSettings) -> None:
    """Scratch cannot fill a node: every emptyDir has a sizeLimit and every container requests and
    limits ephemeral-storage (the settings' scratch bound)."""
    pods = [obj["spec"]["template"]["spec"] for _, obj in _objects(example_job, settings)
            if obj["kind"] in {"Job", "Deployment"}]
    assert pods
    for pod in pods:
        for volume in pod["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"]["sizeLimit"], volume
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["resources"]["requests"]["ephemeral-storage"] == settings.scratch_request
            assert container["resources"]["limits"]["ephemeral-storage"] == settings.scratch_size
        scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
        assert scratch["emptyDir"] == {"sizeLimit": settings.scratch_size}

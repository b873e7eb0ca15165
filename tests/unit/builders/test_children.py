"""Child kinds as objects, and the adapter pool drawn from the namespace's other jobs."""

import pytest

from finetune_api import FineTuneJob

from finetune_operator.builders.children import adapter_pool, build_child
from finetune_operator.settings import OperatorSettings

from .conftest import make_job

pytestmark = pytest.mark.unit

SETTINGS = OperatorSettings()


def _stored(name: str, phase: str, namespace: str = "team-a", digest: str | None = None, **spec: object) -> dict:
    body = make_job(name, **spec).model_dump(by_alias=True, exclude_none=True, mode="json")
    body["metadata"]["namespace"] = namespace
    body["status"] = {"phase": phase, **({"data": {"modelDigest": digest}} if digest else {})}
    return body


def test_each_child_kind_builds_its_objects():
    job = make_job("ft")
    kinds = {child: [o["kind"] for o in build_child(child, job, SETTINGS, attempt=1)]
             for child in ("config", "prepare", "train-service", "train", "eval")}
    assert kinds == {"config": ["ConfigMap"], "prepare": ["Job"], "train-service": ["Service"], "train": ["Job"],
                     "eval": ["Job"]}
    assert build_child("train", job, SETTINGS, attempt=1)[0]["metadata"]["name"] == "ft-train-a1"
    with pytest.raises(ValueError, match="unknown child"):
        build_child("nothing", job, SETTINGS)  # type: ignore[arg-type]


def test_the_pool_serves_serving_adapters_on_the_same_base_in_the_namespace():
    job = make_job("ft", serving={"mode": "adapter"})
    peers = [
        _stored("same", "Serving", serving={"mode": "adapter"}),
        _stored("deploying", "Deploying", serving={"mode": "adapter"}),
        _stored("training", "Training", serving={"mode": "adapter"}),
        _stored("elsewhere", "Serving", namespace="team-b", serving={"mode": "adapter"}),
        _stored("merged", "Serving", serving={"mode": "merged"}),
        _stored("other-base", "Serving", model={"uri": "pvc://models/other", "name": "other"}, serving={"mode": "adapter"}),
        _stored("ft", "Serving", serving={"mode": "adapter"}),
        {"metadata": {"name": "broken", "namespace": "team-a"}, "spec": {}, "status": {"phase": "Serving"}},
    ]
    assert [m.adapter.job for m in adapter_pool(job, peers, SETTINGS)] == ["same", "deploying"]
    pool = build_child("serving", job, SETTINGS, peers=peers)
    assert any(o["kind"] == "Deployment" for o in pool)
    assert adapter_pool(make_job("ft", serving={"mode": "merged"}), peers, SETTINGS) == []


def test_same_name_different_weights_is_another_pool():
    job = _stored("ft", "Deploying", digest="sha256:" + "1" * 64, serving={"mode": "adapter"})
    peers = [_stored("same-weights", "Serving", digest="sha256:" + "1" * 64, serving={"mode": "adapter"}),
             _stored("other-weights", "Serving", digest="sha256:" + "2" * 64, serving={"mode": "adapter"})]
    members = adapter_pool(FineTuneJob.model_validate(job), peers, SETTINGS)
    assert [m.adapter.job for m in members] == ["same-weights"]

"""The fetch step in the operator's objects: the prepare pod's `fetch` init container is the only
container with the sources' Secrets; every later pod reads fetched copies, offline."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finetune_api.contract.sources import credential_env
from finetune_api.contract.vllm import API_KEY_SECRET
from finetune_api.sources import suite_role
from finetune_operator.builders import build_config_map, build_prepare_job
from finetune_operator.builders.render import render_job
from finetune_operator.settings import OperatorSettings

from .conftest import make_job, with_identity

pytestmark = pytest.mark.unit


def remote_job() -> Any:
    return with_identity(make_job(
        "remote",
        model={"uri": "s3://models/tiny-llm", "secretRef": {"name": "models-bucket"}},
        datasets={"train": {"uri": "hf://acme/chats@v2", "secretRef": {"name": "hub-token"}},
                  "eval": {"uri": "pvc://datasets/eval.jsonl"}},
    ))


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] not in ("Job", "Deployment"):
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_fetch_runs_first_on_cpu_with_the_sources_secrets_as_secret_key_refs() -> None:
    job = build_prepare_job(remote_job(), OperatorSettings())
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch" and fetch["command"][-3:] == ["fetch", "--config", "/etc/finetune/config.json"]
    assert not any("gpu" in key for key in fetch["resources"].get("limits", {}))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    assert refs[credential_env("model", "AWS_ACCESS_KEY_ID")] == {"name": "models-bucket", "key": "AWS_ACCESS_KEY_ID"}
    assert refs[credential_env("model", "AWS_ENDPOINT_URL")] == {"name": "models-bucket", "key": "AWS_ENDPOINT_URL", "optional": True}
    assert refs[credential_env("train", "HF_TOKEN")] == {"name": "hub-token", "key": "HF_TOKEN"}
    assert not any(name.startswith("FT_EVAL_") for name in refs), "a volume source needs no Secret"
    assert "HF_HUB_OFFLINE" not in {e["name"] for e in fetch["env"]}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {r["onExitCodes"]["containerName"] for r in rules if "onExitCodes" in r} >= {"fetch", "trainer"}


def test_an_evaluation_suites_dataset_is_fetched_with_its_own_secret() -> None:
    """Suite datasets are sources like the others: `suite<N>`, by position (names could clash as env names)."""
    job = with_identity(make_job(
        "suites", model={"uri": "pvc://models/tiny"}, datasets={"train": {"uri": "pvc://datasets/train.jsonl"}},
        evaluation={"suites": [{"name": "safety", "kind": "safety"},
                               {"name": "support-tickets", "dataset": {"uri": "s3://evals/tickets.jsonl",
                                                                      "secretRef": {"name": "evals-bucket"}}}]},
    ))
    (fetch,) = build_prepare_job(job, OperatorSettings())["spec"]["template"]["spec"]["initContainers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    assert refs[credential_env(suite_role(1), "AWS_SECRET_ACCESS_KEY")] == {"name": "evals-bucket", "key": "AWS_SECRET_ACCESS_KEY"}
    assert credential_env(suite_role(1), "AWS_SECRET_ACCESS_KEY") == "FT_SUITE1_AWS_SECRET_ACCESS_KEY"
    assert not any(name.startswith("FT_SUITE0_") for name in refs), "the shipped safety suite reads no dataset"


def test_no_other_container_or_config_map_carries_a_source_secret() -> None:
    job = remote_job()
    objects = [o for phase in render_job(job, OperatorSettings()).values() for o in phase]
    for obj in objects:
        for container in containers(obj):
            if container["name"] == "fetch":
                continue
            secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            assert secrets <= {API_KEY_SECRET}, (obj["kind"], container["name"])  # vLLM's own API key only
            assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container.get("env", []), (obj["kind"], container["name"])
    config = build_config_map(job, OperatorSettings())
    assert "models-bucket" in json.dumps(config), "the config names the Secret (not its values)"


def test_vllm_serves_the_fetched_base_model_through_the_output_link() -> None:
    settings = OperatorSettings()
    objects = [o for phase in render_job(remote_job(), settings).values() for o in phase]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (vllm,) = containers(deployment)
    model = vllm["args"][vllm["args"].index("--model") + 1]
    assert model == f"/mnt/pvc/{settings.artifacts_pvc}/team-a/remote/sources/model"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert settings.artifacts_pvc in claims

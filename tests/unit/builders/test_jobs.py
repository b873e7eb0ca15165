"""ConfigMap, prepare and eval Jobs; resolved config; names."""

from __future__ import annotations

import json

import pytest

from finetune_api.contract.vllm import pooled_base_name
from finetune_api.resolved import ResolvedConfig
from finetune_operator.builders import build_config_map, build_eval_job, build_prepare_job, resolve_config
from finetune_operator.builders.names import pool_name
from finetune_operator.settings import OperatorSettings

from .conftest import make_job

pytestmark = pytest.mark.unit


def test_config_map_holds_the_resolved_config_with_pod_paths() -> None:
    job = make_job("ft")
    cm = build_config_map(job, OperatorSettings(artifacts_pvc="arts", pvc_mount_root="/data"))
    config = ResolvedConfig.model_validate(json.loads(cm["data"]["config.json"]))
    assert config.paths.output == "/data/arts/team-a/ft" and config.paths.model == "/data/models/base-7b"
    assert config.served_model_name == "ft" and config.generation == 2
    assert config == resolve_config(job, OperatorSettings(artifacts_pvc="arts", pvc_mount_root="/data"))


def test_prepare_is_cpu_only_and_mounts_the_config() -> None:
    job = make_job(resources={"gpusPerNode": 8, "nodeSelector": {"gpu": "h100"}})
    pod = build_prepare_job(job, OperatorSettings())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "finetune_trainer", "prepare", "--config", "/etc/finetune/config.json"]
    assert not any("gpu" in k for k in container["resources"]["requests"]) and "nodeSelector" not in pod
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/finetune"]["readOnly"] and not mounts["/mnt/pvc/finetune-artifacts"]["readOnly"]
    assert mounts["/mnt/pvc/models"]["readOnly"]


def test_merged_eval_merges_first_on_the_serving_gpus() -> None:
    job = make_job(serving={"mode": "merged", "gpus": 2})
    pod = build_eval_job(job, OperatorSettings())["spec"]["template"]["spec"]
    assert [c["command"][3] for c in pod["initContainers"]] == ["merge"]
    assert pod["containers"][0]["command"][3] == "evaluate"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_adapter_eval_has_no_merge_and_no_gpu_when_serving_has_none() -> None:
    pod = build_eval_job(make_job(serving={"mode": "adapter", "gpus": 0}), OperatorSettings())["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert not any("gpu" in k for k in pod["containers"][0]["resources"]["requests"])


def test_a_judge_graders_api_key_comes_from_its_secret_into_the_eval_container_only() -> None:
    judge = {"name": "judge.v2", "type": "score_model", "rubric": "r", "endpoint": "https://judge.example/v1",
             "apiKeySecret": {"name": "judge-key", "key": "token"}}
    job = make_job(evaluation={"graders": [judge]})
    pod = build_eval_job(job, OperatorSettings())["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["FT_GRADER_API_KEY_JUDGE_V2"] == {
        "name": "FT_GRADER_API_KEY_JUDGE_V2", "valueFrom": {"secretKeyRef": {"name": "judge-key", "key": "token"}}}
    config_map = json.dumps(build_config_map(job, OperatorSettings()))
    assert "judge-key" in config_map and "valueFrom" not in config_map  # the Secret's name, never its value


@pytest.mark.parametrize(
    ("base", "name"),
    [("qwen2.5-7b", "vllm-qwen2-5-7b"), ("llama_3", "vllm-llama-3"), ("a" * 63, None)],
)
def test_pool_names_are_dns_labels(base: str, name: str | None) -> None:
    result = pool_name(base)
    assert len(result) <= 63 and result == pool_name(base)
    if name:
        assert result == name
    keyed = pool_name(base, "sha256:" + "ab12" * 16)
    assert len(keyed) <= 63 and keyed.endswith("-ab12ab12ab")


def test_a_pool_is_keyed_by_the_base_models_content_not_its_name() -> None:
    one, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert pool_name("tiny", one) == pool_name("tiny", one) != pool_name("tiny", other)


def test_a_pool_judged_grader_asks_the_observed_pool_replica_with_the_pools_key_from_its_secret() -> None:
    judge = {"name": "helpful", "type": "score_model", "rubric": "r"}
    job = make_job(evaluation={"graders": [judge]})
    pod = build_eval_job(job, OperatorSettings(), judge_url="http://10.1.0.7:8000")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["FT_JUDGE_ENDPOINT"]["value"] == "http://10.1.0.7:8000/v1"
    assert env["FT_JUDGE_MODEL"]["value"] == pooled_base_name(job.spec)
    assert env["FT_GRADER_API_KEY_HELPFUL"]["valueFrom"] == {
        "secretKeyRef": {"name": "finetune-serving-api-key", "key": "api-key"}}
    keyless = build_eval_job(job, OperatorSettings(serving_api_key=False), judge_url="http://10.1.0.7:8000")
    assert "FT_GRADER_API_KEY_HELPFUL" not in {e["name"] for e in keyless["spec"]["template"]["spec"]["containers"][0]["env"]}

"""The upload Job: CPU only, the trainer's upload phase as an argv list, and the only pod that gets
the output's Secret (env from `secretKeyRef`, the fetch step's env names for role `output`)."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_api.contract.sources import credential_env
from finetune_api.resolved import ResolvedConfig
from finetune_operator.builders import build_config_map
from finetune_operator.builders.render import render_job
from finetune_operator.builders.upload_job import build_upload_job
from finetune_operator.settings import OperatorSettings

from .conftest import make_job, validate, with_identity

pytestmark = pytest.mark.unit


def s3_output_job() -> Any:
    return with_identity(make_job(
        "up", model={"uri": "s3://models/tiny-llm", "secretRef": {"name": "models-bucket"}},
        output={"uri": "s3://results/runs/up", "secretRef": {"name": "results-bucket"}},
    ))


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_the_upload_job_runs_the_upload_phase_on_cpu_with_the_output_secret() -> None:
    settings = OperatorSettings()
    obj = build_upload_job(s3_output_job(), settings)
    validate(obj)
    assert obj["metadata"]["name"] == "up-upload"
    pod = obj["spec"]["template"]["spec"]
    (upload,) = pod["containers"]
    assert "initContainers" not in pod
    assert upload["command"] == ["python", "-m", "finetune_trainer", "upload", "--config", "/etc/finetune/config.json"]
    assert not any("gpu" in key for key in upload["resources"].get("limits", {}))
    assert "nodeSelector" not in pod or not any("gpu" in k for k in pod["nodeSelector"])
    refs = secret_refs(upload)
    assert refs[credential_env("output", "AWS_ACCESS_KEY_ID")] == {"name": "results-bucket", "key": "AWS_ACCESS_KEY_ID"}
    assert refs["FT_OUTPUT_AWS_SECRET_ACCESS_KEY"] == {"name": "results-bucket", "key": "AWS_SECRET_ACCESS_KEY"}
    assert refs["FT_OUTPUT_AWS_ENDPOINT_URL"] == {"name": "results-bucket", "key": "AWS_ENDPOINT_URL", "optional": True}
    assert {r["name"] for r in refs.values()} == {"results-bucket"}, "no source credential in the upload pod"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in upload["env"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert settings.artifacts_pvc in claims
    rules = obj["spec"]["podFailurePolicy"]["rules"]
    assert [r["onExitCodes"]["values"] for r in rules] == [[1]], "a refused credential is not retried"


def test_the_output_secret_is_in_the_upload_pod_only() -> None:
    job = s3_output_job()
    phases = render_job(job, OperatorSettings())
    assert [o["metadata"]["name"] for o in phases["upload"]] == ["up-upload"]
    for phase, objects in phases.items():
        for obj in objects:
            if obj["kind"] not in ("Job", "Deployment"):
                continue
            spec = obj["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                names = {r["name"] for r in secret_refs(container).values()}
                assert ("results-bucket" in names) == (phase == "upload"), (phase, container["name"])
                assert not any(e["name"].startswith("FT_OUTPUT_") for e in container.get("env", [])) or phase == "upload"


def test_an_s3_output_is_written_to_the_artifacts_claim_first() -> None:
    """Training, evaluation and serving read a volume; the upload Job copies from there."""
    settings = OperatorSettings()
    config = ResolvedConfig.model_validate_json(build_config_map(s3_output_job(), settings)["data"]["config.json"])
    assert config.paths.output == f"{settings.pvc_mount_root}/{settings.artifacts_pvc}/team-a/up"
    assert config.spec.output.uri == "s3://results/runs/up"


def test_a_volume_output_has_no_upload_job() -> None:
    assert "upload" not in render_job(with_identity(make_job("vol")), OperatorSettings())

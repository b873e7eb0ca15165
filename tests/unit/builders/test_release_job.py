"""The release Job: CPU only, the release step as an argv list naming the job's hold, the artifacts
claim and its scratch only (no ConfigMap, no Secret, no token)."""

from __future__ import annotations

import pytest

from finetune_api.contract.sources import SOURCE_CACHE_DIR
from finetune_operator.builders.children import build_child
from finetune_operator.settings import OperatorSettings

from .conftest import make_job, validate, with_identity

pytestmark = pytest.mark.unit


def test_the_release_job_drops_the_jobs_hold_and_evicts_to_the_limit() -> None:
    settings = OperatorSettings(source_cache_max_bytes=10_000)
    job = with_identity(make_job("held", model={"uri": "s3://models/tiny-llm", "secretRef": {"name": "bucket"}}))
    (obj,) = build_child("release", job, settings)
    validate(obj)
    assert obj["metadata"]["name"] == "held-release"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == job.metadata.uid
    pod = obj["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cache = f"{settings.pvc_mount_root}/{settings.artifacts_pvc}/{SOURCE_CACHE_DIR}"
    assert container["command"] == ["python", "-m", "finetune_trainer.fetch.release", "--cache", cache,
                                    "--holder", f"{job.metadata.namespace}.held", "--max-bytes", "10000"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [settings.artifacts_pvc] and not [v for v in pod["volumes"] if "configMap" in v or "secret" in v]
    assert not [e for e in container["env"] if "valueFrom" in e] and "nvidia.com/gpu" not in str(container["resources"])
    assert pod["automountServiceAccountToken"] is False
    assert obj["spec"]["activeDeadlineSeconds"] > 0

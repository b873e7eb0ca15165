"""values.schema.json: helm refuses bad values with a message that names the value (as a JSON pointer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .chart import CHART, KUBE_VERSION, NAMESPACE, RELEASE, helm, template, values_args

pytestmark = pytest.mark.unit

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"queue": {"mode": "slurm"}}, "/queue/mode"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"jobs": {"trainerImage": ""}}, "/jobs/trainerImage"),
    ({"jobs": {"imagePullPolicy": "Maybe"}}, "/jobs/imagePullPolicy"),
    ({"jobs": {"progressIntervalSeconds": 0}}, "/jobs/progressIntervalSeconds"),
    ({"storage": {"artifactsPvc": {"size": "lots"}}}, "/storage/artifactsPvc/size"),
    ({"storage": {"mountRoot": "relative/path"}}, "/storage/mountRoot"),
    ({"resources": {"limits": None}}, "/resources"),  # null deletes the default limits
    ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
    ({"securityContext": {"privileged": True}}, "/securityContext/privileged"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}, "/tolerations/0/effect"),
    ({"watchNamespace": ["typo"]}, "watchNamespace"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(overrides: dict[str, Any], field: str, tmp_path: Path) -> None:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
                *values_args(None, overrides, tmp_path),
                check=False)
    assert proc.returncode != 0, f"{overrides} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert field in proc.stderr, proc.stderr


def test_good_overrides_are_accepted(tmp_path: Path) -> None:
    objects = template(None, {"replicaCount": 0, "clusterWide": True, "queue": {"mode": "none"},
                              "jobs": {"jobNamespaces": ["ml-batch"]}}, tmp_path)
    assert any(o["kind"] == "Deployment" and o["spec"]["replicas"] == 0 for o in objects)

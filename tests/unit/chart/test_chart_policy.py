"""The chart's ValidatingAdmissionPolicies follow the values: the images, the admin policy switches, the
operator's own ServiceAccount and the watched namespaces (tests/api/test_tenancy_policy.py proves the
rules on the real API server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .chart import by_kind, template

pytestmark = pytest.mark.unit


def policy(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return next(o for o in by_kind(objects, "ValidatingAdmissionPolicy") if o["metadata"]["name"].endswith(suffix))


def binding(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return next(o for o in by_kind(objects, "ValidatingAdmissionPolicyBinding") if o["metadata"]["name"].endswith(suffix))


def rule_names(p: dict[str, Any]) -> list[str]:
    return [(v.get("message") or v["messageExpression"].strip("'")).split(":", 1)[0] for v in p["spec"]["validations"]]


def variable(p: dict[str, Any], name: str) -> Any:
    return json.loads(next(v["expression"] for v in p["spec"]["variables"] if v["name"] == name))


def test_default_policies_pin_the_operator_and_police_the_release_namespace() -> None:
    objects = template("defaults")
    children = policy(objects, "-children")
    assert children["spec"]["matchConditions"][0]["expression"] == (
        'request.userInfo.username == "system:serviceaccount:finetune-system:ft-finetune-operator"')
    assert variable(children, "allowedImages") == ["ghcr.io/finetune-operator/trainer:0.1.0", "vllm/vllm-openai:v0.32.0"]
    assert rule_names(children) == ["managedLabels", "allowedImages", "noHostAccess", "unprivileged",
                                    "jobServiceAccount", "tolerations"]
    jobs = policy(objects, "-jobs")
    assert rule_names(jobs) == ["allowedImages", "pythonGraders", "tolerations", "outputPath"]
    assert binding(objects, "-jobs")["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["finetune-system"]}]
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in by_kind(objects, "ValidatingAdmissionPolicyBinding"))
    assert all(p["spec"]["failurePolicy"] == "Fail" for p in by_kind(objects, "ValidatingAdmissionPolicy"))


def test_admin_values_shape_the_policies(tmp_path: Path) -> None:
    digest = "registry.example.com/ml/trainer@sha256:" + "a" * 64
    objects = template("cluster-wide", {"policy": {"allowedImages": [digest], "allowPythonGraders": True,
                                                   "allowAnyOutputPath": True,
                                                   "allowedPriorityClasses": ["batch"]}}, tmp_path)
    jobs = policy(objects, "-jobs")
    assert rule_names(jobs) == ["allowedImages", "tolerations", "priorityClasses"]
    assert digest in variable(jobs, "allowedImages") and digest in variable(policy(objects, "-children"), "allowedImages")
    assert "matchResources" not in binding(objects, "-jobs")["spec"]  # cluster-wide: every namespace


def test_the_policies_can_be_left_out(tmp_path: Path) -> None:
    objects = template("defaults", {"admissionPolicy": {"enabled": False}}, tmp_path)
    assert not by_kind(objects, "ValidatingAdmissionPolicy") and not by_kind(objects, "ValidatingAdmissionPolicyBinding")


def test_each_namespace_rule_is_its_own_validation_limited_to_its_namespace(tmp_path: Path) -> None:
    objects = template("defaults", {"policy": {"namespaces": {
        "team-a": {"maxGpusPerJob": 8, "nodeSelectorKeys": [], "claims": ["models"]},
        "team-b": {"priorityClasses": ["batch"]}}}}, tmp_path)
    jobs = policy(objects, "-jobs")
    assert rule_names(jobs)[-4:] == ["namespaces.team-a.maxGpusPerJob", "namespaces.team-a.claims",
                                     "namespaces.team-a.nodeSelectorKeys", "namespaces.team-b.priorityClasses"]
    for validation in jobs["spec"]["validations"][-4:]:
        assert validation["expression"].startswith('request.namespace != "team-')

"""The chart's NetworkPolicies for job pods, read against the labels the operator's builders put on the
pods (`render_job`): every job pod is under a default deny; evaluation pods (model under test, python
graders) receive nothing and reach only DNS and their namespace's serving endpoints (the default judge of a
`score_model` grader is the namespace's adapter pool); training pods reach each other and DNS; prepare and training pods
reach DNS and the admin's `sourceEgress`. The serving pods are not selected here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_operator.builders import render_job
from finetune_operator.settings import OperatorSettings

from .chart import NAMESPACE, by_kind, template

pytestmark = pytest.mark.unit

JOB = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j", "namespace": NAMESPACE, "uid": "u"},
       "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"}, "datasets": {"train": {"uri": "pvc://data/t.jsonl"}},
                "resources": {"nodes": 2, "gpusPerNode": 1}, "evaluation": {"gates": [{"metric": "exact_match", "min": 0.5}]},
                "serving": {"enabled": True}}}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector's verdict (matchLabels and In/NotIn/Exists/DoesNotExist expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": present and value in e.get("values", []), "NotIn": value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def pod_labels() -> dict[str, dict[str, str]]:
    """Phase -> the pod template labels the operator's builders give that phase's pods."""
    phases = render_job(FineTuneJob.model_validate(JOB), OperatorSettings())
    return {phase: obj["spec"]["template"]["metadata"]["labels"]
            for phase, objects in phases.items() for obj in objects if obj["kind"] in {"Job", "Deployment"}}


def policies_for(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in by_kind(objects, "NetworkPolicy")
            if p["metadata"]["namespace"] == NAMESPACE and p["metadata"]["name"] != "ft-finetune-operator"
            and selects(p["spec"]["podSelector"], labels)]


def rules(policies: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    return [r for p in policies if direction.capitalize() in p["spec"]["policyTypes"] for r in p["spec"].get(direction, [])]


SERVING = {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "finetune-operator",
                                                  "finetune.dev/phase": "serve"}}}],
           "ports": [{"port": "http", "protocol": "TCP"}]}
"""Evaluation pods' way to a judge served in their namespace (the serving pods' policy admits them back)."""


def test_each_phase_gets_exactly_its_traffic(tmp_path: Path) -> None:
    store = {"to": [{"ipBlock": {"cidr": "10.0.40.0/24"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    objects = template("defaults", {"jobs": {"networkPolicy": {"sourceEgress": [store]}}}, tmp_path)
    labels = pod_labels()
    assert set(labels) == {"prepare", "train", "eval", "serve"}
    dns = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    train_peers = [{"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "finetune-operator",
                                                     "finetune.dev/phase": "train"}}}]

    evaluation = policies_for(objects, labels["eval"])
    assert rules(evaluation, "egress") == [dns, SERVING] and not rules(evaluation, "ingress")
    assert {"Ingress", "Egress"} <= {t for p in evaluation for t in p["spec"]["policyTypes"]}
    assert selects(SERVING["to"][0]["podSelector"], labels["serve"])

    prepare = policies_for(objects, labels["prepare"])
    assert rules(prepare, "egress") == [dns, store] and not rules(prepare, "ingress")

    train = policies_for(objects, labels["train"])
    assert sorted(json.dumps(r, sort_keys=True) for r in rules(train, "egress")) == sorted(
        json.dumps(r, sort_keys=True) for r in [dns, store, {"to": train_peers}])
    assert rules(train, "ingress") == [{"from": train_peers}]

    serving = policies_for(objects, labels["serve"])  # only its own (test_chart_render checks its peers)
    assert [p["metadata"]["name"] for p in serving] == ["ft-finetune-operator-serving"]
    assert serving[0]["spec"]["policyTypes"] == ["Ingress"]


def test_every_job_namespace_gets_them_and_they_can_be_left_out(tmp_path: Path) -> None:
    objects = template("kueue-namespaced")
    names = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in by_kind(objects, "NetworkPolicy")}
    for ns in ("team-a", "team-b"):
        assert {(ns, "ft-finetune-operator-jobs-deny"), (ns, "ft-finetune-operator-jobs-dns"),
                (ns, "ft-finetune-operator-training-peers"), (ns, "ft-finetune-operator-serving")} <= names
    off = template("defaults", {"jobs": {"networkPolicy": {"enabled": False}}}, tmp_path)
    assert [p["metadata"]["name"] for p in by_kind(off, "NetworkPolicy")] == ["ft-finetune-operator"]


def test_eval_egress_opens_dns_and_the_named_destinations_to_evaluation_pods_only(tmp_path: Path) -> None:
    mlflow = {"to": [{"ipBlock": {"cidr": "10.0.50.7/32"}}], "ports": [{"port": 5000, "protocol": "TCP"}]}
    objects = template("defaults", {"jobs": {"networkPolicy": {"evalEgress": [mlflow]}}}, tmp_path)
    labels = pod_labels()
    dns = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    evaluation = policies_for(objects, labels["eval"])
    assert rules(evaluation, "egress") == [dns, SERVING, mlflow] and not rules(evaluation, "ingress")
    assert mlflow not in rules(policies_for(objects, labels["prepare"]), "egress")
    assert mlflow not in rules(policies_for(objects, labels["train"]), "egress")

"""A canary on the real API server with Gateway API's HTTPRoute CRD (the pinned release's, from the Go
module cache): the operator splits traffic with an HTTPRoute at the spec's weight, and a canary whose
analysis ends without evidence is rolled back by itself: the job ends `Rejected` naming the signal and
the numbers, the HTTPRoute and the arms' replicas route everything to the base, `kubectl get ftj` shows
the canary's state and share, and each step is an Event. A canary with shadow grading runs its shadow
Job when the analysis starts and is rolled back on the grades it reports.

kwok's vLLM pods never answer, so two things stand in for vLLM here: the smoke request's success (the
test writes the `Serving` status with the canary's start that the operator writes after it, as
`test_operator.admit` writes the queue's admission), and the arms' `/metrics`, which cannot be read
(kwok's pod addresses do not connect). The analysis of real readings is proven in the unit tier on a
real vLLM server's exposition (tests/unit/operator/reconcile/test_canary.py)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from finetune_api.contract.summaries import GraderScores, ShadowSummary
from tests.api.test_operator import events_of, ftj
from tests.harness.cluster import CACHE_DIR, REPO
from tests.harness.operator import Operator, PodDriver, get, setup_namespace, status, wait_for, wait_phase

pytestmark = pytest.mark.api

GATEWAY_API_VERSION = re.search(r"^GATEWAY_API_VERSION=(\S+)",
                                (REPO / "scripts" / "build-controlplane.sh").read_text(), re.M).group(1)
HTTPROUTE_CRD = (CACHE_DIR / "go" / "pkg" / "mod" / "sigs.k8s.io" / f"gateway-api@{GATEWAY_API_VERSION}" / "config"
                 / "crd" / "standard" / "gateway.networking.k8s.io_httproutes.yaml")
CANARY = {"weight": 25, "durationSeconds": 60, "minRequests": 5, "timeoutSeconds": 120}


def route_weights(cluster, namespace: str, name: str) -> list[tuple[str, int]] | None:
    route = get(cluster, namespace, "httproute", name)
    if route is None:
        return None
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def replicas(cluster, namespace: str, name: str) -> int | None:
    deployment = get(cluster, namespace, "deployment", name)
    return None if deployment is None else deployment["spec"]["replicas"]


def serving_started(cluster, namespace: str, name: str, split: str, share: int, seconds_ago: int = 0) -> None:
    """What the operator writes once the smoke request answers (kwok's vLLM pods never answer), the
    analysis begun `seconds_ago`."""
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    canary = {"state": "Analyzing", "generation": 1, "split": split, "share": share, "tunedReplicas": 1,
              "baseReplicas": 1, "startedAt": started}
    patch = {"status": {"phase": "Serving", "serving": {"endpoint": f"http://{name}.{namespace}.svc:8000/v1",
                                                        "canary": canary}}}
    cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))


def test_a_canary_without_evidence_is_rolled_back_through_its_httproute(cluster, namespace, operator_kubeconfig,
                                                                         tmp_path):
    assert HTTPROUTE_CRD.is_file(), f"{HTTPROUTE_CRD} missing: scripts/build-controlplane.sh downloads it"
    cluster.kubectl("apply", "--server-side", "-f", str(HTTPROUTE_CRD))
    # `kubectl wait` errors out at once on a CRD the apiserver's cache does not show yet: poll instead
    wait_for("the HTTPRoute CRD established", lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in ((get(cluster, "", "crd", "httproutes.gateway.networking.k8s.io") or {}).get("status") or {})
        .get("conditions") or []), timeout=60)
    setup_namespace(cluster, namespace)
    pods = PodDriver.passing(cluster, namespace)
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="none",
                        FT_GATEWAY_API="true").start()
    try:
        serving = {"mode": "adapter", "replicas": 2, "gpus": 0, "canary": CANARY}
        cluster.apply({**ftj("cny", serving=serving), "metadata": {"name": "cny", "namespace": namespace}})
        wait_phase(cluster, namespace, "cny", "Deploying", timeout=120)
        assert wait_for("the canary's HTTPRoute", lambda: route_weights(cluster, namespace, "cny")) == [
            ("cny-serve", 25), ("cny-base", 75)]
        assert (replicas(cluster, namespace, "cny-serve"), replicas(cluster, namespace, "cny-base")) == (1, 1)

        # the analysis begun 200 s ago: past its 120 s deadline with no arm's /metrics read
        serving_started(cluster, namespace, "cny", "HTTPRoute", 25, seconds_ago=200)

        rejected = wait_phase(cluster, namespace, "cny", "Rejected", timeout=60)
        assert rejected["reason"] == "CanaryRolledBack"
        assert rejected["message"].startswith(
            "canary rolled back on traffic: the tuned and base arm(s) answered fewer than minRequests 5 within "
            "timeoutSeconds 120 (tuned 0, base 0 request(s))"), rejected["message"]
        assert wait_for("the HTTPRoute at 0 %", lambda: route_weights(cluster, namespace, "cny") == [
            ("cny-serve", 0), ("cny-base", 100)])
        assert (replicas(cluster, namespace, "cny-serve"), replicas(cluster, namespace, "cny-base")) == (0, 2)
        routed = wait_for("the share routed", lambda: (s := status(cluster, namespace, "cny"))["serving"]["canary"]
                          .get("share") == 0 and s["serving"]["canary"])
        assert (routed["state"], routed["split"], routed["baseReplicas"]) == ("RolledBack", "HTTPRoute", 2)

        table = cluster.kubectl("get", "ftj", "cny", "-n", namespace).stdout.splitlines()
        header, row = table[0].split(), table[1].split()
        assert header[:7] == ["NAME", "PHASE", "PROGRESS", "EVAL", "ENDPOINT", "CANARY", "TUNED%"], table
        assert row[0] == "cny" and "Rejected" in row and row[-3:-1] == ["RolledBack", "0"], table

        reasons = events_of(cluster, namespace, "cny")
        assert {"CanaryRolledBack", "CanaryRouted"} <= set(reasons), reasons
    finally:
        pods.close()
        operator.stop()  # also asserts no call was refused by RBAC (the HTTPRoute patch included)


def test_a_canary_whose_shadow_grades_drop_is_rolled_back_naming_the_grader(cluster, namespace, operator_kubeconfig,
                                                                            tmp_path):
    setup_namespace(cluster, namespace)
    pods = PodDriver.passing(cluster, namespace)
    pods.on("shadow", 0, ShadowSummary(items=8, scores=[GraderScores(grader="exact", tuned=0.25, base=0.75)]))
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="none").start()
    try:
        evaluation = {"gates": [{"metric": "exact_match", "min": 0.8}],
                      "graders": [{"name": "exact", "type": "string_check"}]}
        canary = {**CANARY, "weight": 50, "shadowGrading": {"graders": ["exact"], "items": 8, "maxScoreDrop": 0.1}}
        serving = {"mode": "adapter", "replicas": 2, "gpus": 0, "canary": canary}
        cluster.apply({**ftj("shd", evaluation=evaluation, serving=serving),
                       "metadata": {"name": "shd", "namespace": namespace}})
        wait_phase(cluster, namespace, "shd", "Deploying", timeout=120)
        assert get(cluster, namespace, "service", "shd-base") is not None  # the shadow grading's base arm address
        serving_started(cluster, namespace, "shd", "Replicas", 50)

        rejected = wait_phase(cluster, namespace, "shd", "Rejected", timeout=90)
        assert rejected["reason"] == "CanaryRolledBack"
        # (kwok's pods' /metrics cannot be read: the message says so after the grades)
        assert rejected["message"].startswith(
            "canary rolled back on grader exact: grader exact on a shadow sample of 8 held-out prompt(s): 0.250 on "
            "the tuned arm vs 0.750 on the base: drop 0.500 is above maxScoreDrop 0.1"), rejected["message"]
        shadow = get(cluster, namespace, "job", "shd-shadow")
        env = {e["name"]: e.get("value") for e in shadow["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FT_SHADOW_BASE_URL"] == f"http://shd-base.{namespace}.svc:8000/v1"
        assert wait_for("routed to the base", lambda: (replicas(cluster, namespace, "shd-serve"),
                                                       replicas(cluster, namespace, "shd-base")) == (0, 2))
        assert "CanaryRolledBack" in events_of(cluster, namespace, "shd")
    finally:
        pods.close()
        operator.stop()

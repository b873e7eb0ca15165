"""Fault injection: the real operator against the real API server through `tests.harness.faultproxy`,
which answers chosen requests with 500, 409 or 429 (DESIGN.md §9 "Fault injection"). Whatever the
faults, nothing is created twice, nothing is lost, and every job ends in the phase it should.

Also the deadline tier: a vLLM pod that never becomes ready (kwok keeps `kwok.invalid/never-ready:0`
pods in ImagePullBackOff) and a training run past its deadline end `Failed` with a reason that says so.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from finetune_api.contract.summaries import TrainSummary
from tests.api.test_operator import events_of, ftj
from tests.harness.cluster import KWOK_NEVER_READY_IMAGE
from tests.harness.faultproxy import FaultProxy, FaultRule, start_fault_proxy
from tests.harness.summaries import PREPARED, TRAINED, evaluated
from tests.harness.operator import Operator, PodDriver, get, names_of, setup_namespace, status, wait_for, wait_phase

pytestmark = pytest.mark.api

CREATES = r"^/api(s/batch)?/v1/namespaces/[^/]+/(configmaps|services|jobs)$"


@pytest.fixture
def proxy(cluster):
    p = start_fault_proxy(cluster, seed=14)
    yield p
    p.stop()


def start_operator(proxy: FaultProxy, operator_kubeconfig: str, tmp_path, **env: str) -> Operator:
    kubeconfig = proxy.kubeconfig_for(operator_kubeconfig, tmp_path / "through-proxy.kubeconfig")
    env = {"FT_QUEUE_MODE": "none", "FT_RECONCILE_ERROR_ATTEMPTS": "3", **env}
    return Operator(kubeconfig, tmp_path / "operator.log", **env).start()


@pytest.fixture
def pods(cluster, namespace):
    driver = PodDriver(cluster, namespace)
    driver.on("prepare", 0, PREPARED)
    driver.on("train", 0, TRAINED)
    driver.on("eval", 0, evaluated(True))
    yield driver
    driver.close()


def submit(cluster, namespace: str, names: list[str], **spec: Any) -> None:
    setup_namespace(cluster, namespace)
    spec = {"serving": {"enabled": False}, **spec}
    cluster.apply([{**ftj(n, **spec), "metadata": {"name": n, "namespace": namespace}} for n in names])


def settle(cluster, namespace: str, names: list[str], expected: str, timeout: float = 180) -> dict[str, dict]:
    """Wait until every job is terminal; print how many reached `expected`; return their statuses."""
    def terminal() -> dict[str, dict] | None:
        found = {n: status(cluster, namespace, n) for n in names}
        return found if all(s.get("phase") in ("Succeeded", "Failed", "Rejected") for s in found.values()) else None

    try:
        found = wait_for(f"{len(names)} jobs to end", terminal, timeout=timeout, interval=1)
    except TimeoutError:
        found = {n: status(cluster, namespace, n) for n in names}
    reached = [n for n, s in found.items() if s.get("phase") == expected]
    print(f"\n{len(reached)}/{len(names)} jobs reached {expected}: "
          + ", ".join(f"{n}={s.get('phase')}" for n, s in sorted(found.items())))
    assert len(reached) == len(names), {n: (s.get("phase"), s.get("message")) for n, s in found.items()}
    return found


def assert_children_exactly_once(cluster, namespace: str, names: list[str]) -> None:
    """No duplicate and no missing child: exactly the deterministic set, each owned by its job."""
    assert names_of(cluster, namespace, "jobs") == sorted(
        f"{n}-{c}" for n in names for c in ("eval", "prepare", "train-a0"))
    assert [c for c in names_of(cluster, namespace, "configmaps") if c != "kube-root-ca.crt"] == sorted(
        f"{n}-config" for n in names)
    assert names_of(cluster, namespace, "services") == sorted(f"{n}-train" for n in names)
    for n in names:
        uid = get(cluster, namespace, "finetunejob", n)["metadata"]["uid"]
        for kind, child in (("job", f"{n}-prepare"), ("configmap", f"{n}-config")):
            owners = get(cluster, namespace, kind, child)["metadata"]["ownerReferences"]
            assert [(o["uid"], o.get("controller")) for o in owners] == [(uid, True)], (kind, child)


# -- fault injection -------------------------------------------------------------------------------------

def test_a_500_storm_during_creates_loses_and_duplicates_nothing(cluster, namespace, proxy, operator_kubeconfig,
                                                                 tmp_path, pods):
    storm = proxy.add(FaultRule("POST", CREATES, 500, count=12))
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        names = [f"storm-{i}" for i in range(4)]
        submit(cluster, namespace, names)
        found = settle(cluster, namespace, names, "Succeeded")
        assert storm.injected == 12, "the storm hit the operator's creates"
        counted = re.search(r'finetune_reconcile_errors_total\{class="transient",reason="ApiError"\} (\S+)',
                            op.metrics_text())
        assert counted and float(counted.group(1)) == storm.injected, "each failed reconcile counted once as transient"
        assert_children_exactly_once(cluster, namespace, names)
        for n, s in found.items():
            assert s["attempts"]["count"] == 1 and s["attempts"]["infrastructureFailures"] == 0, n
        recovered = [n for n, s in found.items() if any(
            c["type"] == "Reconciled" and c["status"] == "True" for c in s["conditions"])]
        assert recovered, "a job that met the storm shows it recovered (Reconciled: True)"
    finally:
        op.stop()


def test_429_bursts_on_every_write_lose_and_duplicate_nothing(cluster, namespace, proxy, operator_kubeconfig,
                                                              tmp_path, pods):
    writes = rf"^/api(s/[^/]+)?/v1[^/]*/namespaces/{namespace}/"
    burst = proxy.add(FaultRule("POST|PATCH", writes, 429, count=25, probability=0.5))
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        names = [f"burst-{i}" for i in range(4)]
        submit(cluster, namespace, names)
        settle(cluster, namespace, names, "Succeeded")
        assert burst.injected > 0
        assert proxy.injected("PATCH", "/status") > 0, "status writes were rate limited too"
        assert_children_exactly_once(cluster, namespace, names)
    finally:
        op.stop()


def test_a_lasting_503_is_a_condition_not_a_failure_and_the_job_resumes(cluster, namespace, proxy,
                                                                          operator_kubeconfig, tmp_path, pods):
    outage = proxy.add(FaultRule("POST", CREATES, 503))
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        submit(cluster, namespace, ["outage"])
        cond = wait_for("the outage in the job's conditions", lambda: next((
            c for c in status(cluster, namespace, "outage").get("conditions") or []
            if c["type"] == "Reconciled" and c["status"] == "False"), None), timeout=60)
        assert cond["reason"] == "ApiError" and cond["message"].startswith("API error 503 Service Unavailable: ")
        assert cond["message"].endswith("; retrying with backoff")
        wait_for("more failed attempts than the permanent-error budget (3)", lambda: outage.injected >= 5, timeout=90)
        assert status(cluster, namespace, "outage").get("phase") in (None, "Pending"), "a transient error never fails"
        proxy.clear()
        found = settle(cluster, namespace, ["outage"], "Succeeded")
        assert_children_exactly_once(cluster, namespace, ["outage"])
        reconciled = next(c for c in found["outage"]["conditions"] if c["type"] == "Reconciled")
        assert reconciled["status"] == "True"
    finally:
        op.stop()


def test_a_permanent_error_fails_the_job_and_releases_its_queue_admission(cluster, namespace, proxy,
                                                                         operator_kubeconfig, tmp_path, pods):
    """Admitted by the (embedded) queue, the job cannot create its training Job (a 422): an Event and a
    condition at once, then `Failed` after the budget, with the admission given back."""
    op = start_operator(proxy, operator_kubeconfig, tmp_path, FT_QUEUE_MODE="embedded")
    try:
        submit(cluster, namespace, ["refused"])
        wait_phase(cluster, namespace, "refused", "Queued", timeout=60)
        refused = proxy.add(FaultRule("POST", r"^/apis/batch/v1/namespaces/[^/]+/jobs$", 422))
        cluster.kubectl("patch", "finetunejob", "refused", "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"queue": {"admitted": True}}}))
        failed = settle(cluster, namespace, ["refused"], "Failed", timeout=90)["refused"]
        assert failed["reason"] == "ApiError"
        assert failed["message"].startswith("API error 422 Unprocessable Entity: injected by the test fault proxy")
        assert failed["queue"]["admitted"] is False
        assert refused.injected == 3, "a bounded number of attempts"
        assert events_of(cluster, namespace, "refused").count("ApiError") == 2, "one Event at once, one on Failed"
        assert names_of(cluster, namespace, "jobs") == ["refused-prepare"]
    finally:
        op.stop()


def test_a_409_for_our_own_object_proceeds(cluster, namespace, proxy, operator_kubeconfig, tmp_path, pods):
    """The create of the prepare Job goes through, but its answer is a 409 (a lost response and a retry):
    the operator reads the Job, finds its own controller reference and carries on."""
    lost = proxy.add(FaultRule("POST", r"^/apis/batch/v1/namespaces/[^/]+/jobs$", 409, count=1, after_forward=True))
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        submit(cluster, namespace, ["own"])
        settle(cluster, namespace, ["own"], "Succeeded")
        assert lost.injected == 1
        assert_children_exactly_once(cluster, namespace, ["own"])
    finally:
        op.stop()


def test_a_409_for_a_foreign_object_fails_the_job_naming_it(cluster, namespace, proxy, operator_kubeconfig,
                                                            tmp_path, pods):
    setup_namespace(cluster, namespace)
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "taken-config", "namespace": namespace},
                   "data": {"owner": "someone else"}})
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        submit(cluster, namespace, ["taken"])
        found = settle(cluster, namespace, ["taken"], "Failed", timeout=90)
        failed = found["taken"]
        assert failed["reason"] == "ForeignObject"
        assert failed["message"].startswith(f"ConfigMap {namespace}/taken-config already exists and is not this job's")
        assert "ForeignObject" in events_of(cluster, namespace, "taken")
        untouched = get(cluster, namespace, "configmap", "taken-config")
        assert untouched["data"] == {"owner": "someone else"} and not untouched["metadata"].get("ownerReferences")
        assert names_of(cluster, namespace, "jobs") == [], "nothing was built on top of a foreign object"
    finally:
        op.stop()


def test_a_recreated_job_does_not_adopt_its_predecessors_children(cluster, namespace, proxy, operator_kubeconfig,
                                                                  tmp_path, pods):
    """Deleted with `--cascade=orphan`, a job leaves its children behind without an owner; a new job of
    the same name must not take them over (they hold its children's names): it fails naming one."""
    pods.on("train", 0, TrainSummary(), delay="300s")
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        submit(cluster, namespace, ["again"])
        wait_phase(cluster, namespace, "again", "Training", timeout=60)
        cluster.kubectl("delete", "finetunejob", "again", "-n", namespace, "--wait=true", "--cascade=orphan")
        wait_for("the children orphaned", lambda: not get(cluster, namespace, "job", "again-prepare")["metadata"].get(
            "ownerReferences"), timeout=60)
        submit(cluster, namespace, ["again"])
        failed = settle(cluster, namespace, ["again"], "Failed", timeout=90)["again"]
        assert failed["reason"] == "ForeignObject"
        assert failed["message"].startswith(f"ConfigMap {namespace}/again-config already exists and is not this job's "
                                            "(controlled by nobody)")
        for kind, child in (("job", "again-prepare"), ("job", "again-train-a0"), ("configmap", "again-config")):
            assert not get(cluster, namespace, kind, child)["metadata"].get("ownerReferences"), (kind, child)
    finally:
        op.stop()


# -- deadlines ---------------------------------------------------------------------------------------------

def test_deploying_with_a_vllm_pod_that_never_becomes_ready_fails_naming_the_reason(cluster, namespace, proxy,
                                                                                  operator_kubeconfig, tmp_path, pods):
    op = start_operator(proxy, operator_kubeconfig, tmp_path, FT_VLLM_IMAGE=KWOK_NEVER_READY_IMAGE)
    try:
        submit(cluster, namespace, ["stuck"], serving={"enabled": True}, deadlines={"deployingSeconds": 20})
        wait_phase(cluster, namespace, "stuck", "Deploying", timeout=90)
        found = settle(cluster, namespace, ["stuck"], "Failed", timeout=90)
        failed = found["stuck"]
        assert failed["reason"] == "DeployingDeadlineExceeded"
        assert failed["message"].startswith("Deploying exceeded its deadline of 20s: vLLM pod never became ready: "
                                            "ImagePullBackOff: Back-off pulling image")
        assert KWOK_NEVER_READY_IMAGE in failed["message"]
        assert "DeployingDeadlineExceeded" in events_of(cluster, namespace, "stuck")
    finally:
        op.stop()


def test_training_past_its_deadline_fails_without_a_retry(cluster, namespace, proxy, operator_kubeconfig, tmp_path,
                                                          pods):
    pods.on("train", 0, TrainSummary(), delay="300s")
    op = start_operator(proxy, operator_kubeconfig, tmp_path)
    try:
        submit(cluster, namespace, ["slow"], deadlines={"trainingSeconds": 8})
        train = wait_for("the training Job", lambda: get(cluster, namespace, "job", "slow-train-a0"), timeout=60)
        assert train["spec"]["activeDeadlineSeconds"] == 8
        found = settle(cluster, namespace, ["slow"], "Failed", timeout=90)
        failed = found["slow"]
        assert failed["reason"] == "TrainingDeadlineExceeded"
        assert failed["message"].startswith("Training attempt 0 exceeded its deadline of 8s (activeDeadlineSeconds)")
        assert failed["attempts"]["count"] == 1
        assert names_of(cluster, namespace, "jobs") == ["slow-prepare", "slow-train-a0"]
        print(json.dumps({k: failed[k] for k in ("phase", "reason", "message")}))
    finally:
        op.stop()

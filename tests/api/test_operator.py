"""The real operator (`python -m finetune_operator.main`) against the test control plane, running as a
ServiceAccount bound to a ClusterRole built from `rbac.REQUIRED_RULES` (a missing permission fails
these tests). kwok plays the pods: a Job pod runs until it is annotated with an exit code and a termination
message, which `PodDriver` does as soon as the Job controller creates it (exit 0 for a phase without a plan).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from finetune_api.contract.summaries import PrepareSummary, TrainSummary
from finetune_api.job import DataReport
from tests.harness.summaries import PREPARED, TRAINED, evaluated, uploaded
from tests.harness.operator import (
    Operator,
    PodDriver,
    get,
    names_of,
    setup_namespace,
    status,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.api


@pytest.fixture
def operator(cluster, operator_kubeconfig, tmp_path):
    op = Operator(operator_kubeconfig, tmp_path / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture
def pods(cluster, namespace):
    driver = PodDriver(cluster, namespace)
    yield driver
    driver.close()


# -- helpers ---------------------------------------------------------------------------------------

def ftj(name: str, **spec: Any) -> dict:
    base = {
        "model": {"uri": "pvc://models/tiny", "name": "tiny"},
        "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
        "resources": {"nodes": 1, "gpusPerNode": 1},
        "retry": {"maxAttempts": 3, "backoffSeconds": 0},
        "evaluation": {"gates": [{"metric": "exact_match", "min": 0.8}]},
        "serving": {"gpus": 0},  # a CPU evaluation starts at once (a GPU one waits for the queue: test_queue_workloads)
    }
    base.update(spec)
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": base}


def admit(cluster, namespace: str, name: str, **queue: Any) -> None:
    """What the embedded queue does on admission (the queue's own tests cover the decision)."""
    patch = {"status": {"queue": {"admitted": True, **queue}}}
    cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))


def events_of(cluster, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name},involvedObject.kind=FineTuneJob", "-o", "json")
    return [e["reason"] for e in sorted(json.loads(out.stdout)["items"], key=lambda e: e.get("eventTime") or "")]


def start_training(cluster, namespace: str, name: str, pods: PodDriver, **spec: Any) -> dict:
    setup_namespace(cluster, namespace)
    cluster.apply({**ftj(name, **spec), "metadata": {"name": name, "namespace": namespace}})
    wait_phase(cluster, namespace, name, "Queued")
    admit(cluster, namespace, name)
    return wait_phase(cluster, namespace, name, "Training")


# -- tests -----------------------------------------------------------------------------------------

def test_happy_path_through_training_and_as_far_as_kwok_drives_evaluation(cluster, namespace, operator, pods):
    pods.on("train", 0, TRAINED, delay="4s")
    pods.on("prepare", 0, PREPARED)
    pods.on("eval", 0, evaluated(True))
    training = start_training(cluster, namespace, "happy", pods)
    assert training["attempts"]["count"] == 1 and training["observedGeneration"] == 1
    assert training["data"]["trainExamples"] == 120
    for kind, name in (("configmap", "happy-config"), ("job", "happy-prepare"), ("job", "happy-train-a0"),
                       ("service", "happy-train")):
        owners = get(cluster, namespace, kind, name)["metadata"]["ownerReferences"]
        assert [o["kind"] for o in owners] == ["FineTuneJob"], (kind, name)
    deploying = wait_phase(cluster, namespace, "happy", "Deploying", timeout=90)
    assert deploying["evaluation"]["passed"] is True and deploying["gpuSeconds"] > 0
    # what the trainer's summaries carry reaches the status: final losses, the weights and their digest
    assert (deploying["progress"]["loss"], deploying["progress"]["evalLoss"]) == (0.5, 0.6)
    artifacts = deploying["artifacts"]
    assert artifacts["adapter"] == f"{artifacts['root']}/adapter" and artifacts["adapterDigest"] == TRAINED.weights.digest
    assert artifacts["evalReport"] == deploying["evaluation"]["reportPath"] == f"{artifacts['root']}/eval/report.json"
    conditions = {c["type"]: c["status"] for c in deploying["conditions"]}
    assert conditions["Validated"] == conditions["Admitted"] == conditions["Trained"] == conditions["Evaluated"] == "True"
    assert get(cluster, namespace, "deployment", "vllm-tiny") is not None
    assert events_of(cluster, namespace, "happy")[:5] == ["Validating", "Queued", "Training", "Evaluating", "Deploying"]
    assert names_of(cluster, namespace, "jobs") == ["happy-eval", "happy-prepare", "happy-train-a0"]


def test_bad_data_fails_at_validating_with_the_trainers_reason(cluster, namespace, operator, pods):
    error = "datasets.train line 7: a row needs `messages`"
    pods.on("prepare", 1, PrepareSummary.failure("UserError", error, data=DataReport(train_examples=6)))
    setup_namespace(cluster, namespace)
    cluster.apply({**ftj("bad"), "metadata": {"name": "bad", "namespace": namespace}})
    failed = wait_phase(cluster, namespace, "bad", "Failed")
    assert failed["reason"] == "ValidationFailed" and failed["message"] == error
    assert "Failed" not in [c["type"] for c in failed["conditions"]]
    assert names_of(cluster, namespace, "jobs") == ["bad-prepare"]
    assert "ValidationFailed" in events_of(cluster, namespace, "bad")


def test_user_error_in_training_fails_without_retry(cluster, namespace, operator, pods):
    pods.on("train", 1, TrainSummary.failure("UserError", "loss is NaN at step 3"))
    start_training(cluster, namespace, "user", pods)
    failed = wait_phase(cluster, namespace, "user", "Failed")
    assert failed["reason"] == "TrainingFailed" and "loss is NaN" in failed["message"]
    assert failed["attempts"]["count"] == 1 and failed["attempts"]["infrastructureFailures"] == 0
    time.sleep(3)
    assert names_of(cluster, namespace, "jobs") == ["user-prepare", "user-train-a0"]


def test_killed_training_retries_as_the_next_attempt(cluster, namespace, operator, pods):
    pods.on("train", 137, job="kill-train-a0")
    pods.on("train", 0, TrainSummary(step=5), job="kill-train-a1", delay="30s")
    start_training(cluster, namespace, "kill", pods)
    retried = wait_for("attempt 1", lambda: (s := status(cluster, namespace, "kill"))["attempts"]["count"] == 2 and s)
    assert retried["attempts"]["infrastructureFailures"] == 1
    assert retried["attempts"]["lastFailure"].startswith("attempt 0: exit code 137")
    assert names_of(cluster, namespace, "jobs") == ["kill-prepare", "kill-train-a0", "kill-train-a1"]
    assert "Retrying" in events_of(cluster, namespace, "kill")


def test_queue_eviction_stops_training_and_resumes_as_a_new_attempt(cluster, namespace, operator, pods):
    pods.on("train", 0, TrainSummary(), delay="60s")
    start_training(cluster, namespace, "evict", pods)
    patch = {"status": {"queue": {"evictionRequested": True}}}
    cluster.kubectl("patch", "finetunejob", "evict", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))
    queued = wait_phase(cluster, namespace, "evict", "Queued")
    assert queued["reason"] == "Preempted" and queued["attempts"]["preemptions"] == 1
    assert queued["attempts"]["infrastructureFailures"] == 0 and queued["queue"]["admitted"] is False
    wait_for("attempt 0 deleted", lambda: "evict-train-a0" not in names_of(cluster, namespace, "jobs"))
    admit(cluster, namespace, "evict")
    training = wait_phase(cluster, namespace, "evict", "Training")
    assert training["attempts"]["count"] == 2
    assert names_of(cluster, namespace, "jobs") == ["evict-prepare", "evict-train-a1"]


def test_an_evicted_training_pod_resumes_without_spending_the_retry_budget(cluster, namespace, operator, pods):
    """A node drain or a preemption evicts the pod (Eviction API → DisruptionTarget condition): the
    Job's podFailurePolicy fails it, and the operator starts the next attempt as a preemption."""
    from kubernetes import client

    pods.on("train", 0, TrainSummary(), delay="120s", job="drain-train-a0")
    pods.on("train", 0, TrainSummary(step=5), delay="60s", job="drain-train-a1")
    start_training(cluster, namespace, "drain", pods)
    core = client.CoreV1Api(cluster.api_client())
    pod = wait_for("a running training pod", lambda: next((
        p.metadata.name for p in core.list_namespaced_pod(
            namespace, label_selector="batch.kubernetes.io/job-name=drain-train-a0").items
        if p.status.phase == "Running"), None))
    core.create_namespaced_pod_eviction(pod, namespace, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=namespace)))
    retried = wait_for("attempt 1", lambda: (s := status(cluster, namespace, "drain"))["attempts"]["count"] == 2 and s,
                       timeout=90)
    assert retried["attempts"]["preemptions"] == 1, retried["attempts"]
    assert retried["attempts"]["infrastructureFailures"] == 0, retried["attempts"]
    assert "drain-train-a1" in names_of(cluster, namespace, "jobs")


def test_a_failing_gate_ends_rejected_without_a_deployment(cluster, namespace, operator, pods):
    pods.on("eval", 0, evaluated(False))
    pods.on("train", 0, TrainSummary(step=10))
    start_training(cluster, namespace, "gate", pods)
    rejected = wait_phase(cluster, namespace, "gate", "Rejected", timeout=90)
    assert rejected["reason"] == "GatesNotPassed" and rejected["message"].endswith("exact_match: tuned 0.400 < min 0.800")
    assert rejected["evaluation"]["passed"] is False
    assert names_of(cluster, namespace, "deployments") == []


def test_an_s3_output_is_uploaded_by_its_own_job_with_the_output_secret(cluster, namespace, operator, pods):
    """After the gates pass, `<job>-upload` runs (the only pod given the output Secret); the keys and ETags
    of its summary reach `status.artifacts.uploaded`, and the job ends. No Secret value is written anywhere."""
    value = "upload-secret-value-7f3a"
    summary = uploaded("results", "runs/up")
    for phase, message in (("prepare", PREPARED), ("train", TRAINED), ("eval", evaluated(True)), ("upload", summary)):
        pods.on(phase, 0, message, delay="1s")
    setup_namespace(cluster, namespace)
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "results-bucket", "namespace": namespace},
                   "stringData": {"AWS_ACCESS_KEY_ID": "uploader", "AWS_SECRET_ACCESS_KEY": value}})
    start_training(cluster, namespace, "up", pods, serving={"enabled": False, "gpus": 0},
                   output={"uri": "s3://results/runs/up", "secretRef": {"name": "results-bucket"}})
    done = wait_phase(cluster, namespace, "up", "Succeeded", timeout=60)
    assert done["reason"] == "Uploaded" and done["message"] == "2 object(s) uploaded to s3://results/runs/up; serving disabled"
    assert done["artifacts"]["root"].startswith("pvc://") and done["artifacts"]["adapter"].endswith("/up/adapter")
    assert done["artifacts"]["uploaded"] == {
        "uri": "s3://results/runs/up", "count": 2, "bytes": 17284, "manifest": summary.manifest.to_wire(),
        "record": f"{done['artifacts']['root']}/upload.json"}
    assert {c["type"]: c["status"] for c in done["conditions"]}["Uploaded"] == "True"
    assert events_of(cluster, namespace, "up")[-3:] == ["Evaluating", "Uploading", "Uploaded"]
    pods_json = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    with_secret = {}
    for pod in pods_json:
        refs = {e["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"] for e in c.get("env", [])
                if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "results-bucket"}
        with_secret[pod["metadata"]["labels"]["finetune.dev/phase"]] = refs
    assert with_secret.pop("upload") >= {"FT_OUTPUT_AWS_ACCESS_KEY_ID", "FT_OUTPUT_AWS_SECRET_ACCESS_KEY"}
    assert set(with_secret) >= {"prepare", "train", "eval"} and not any(with_secret.values()), with_secret
    written = [cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
               for kind in ("finetunejobs", "configmaps", "events", "jobs")]
    assert not [text for text in written if value in text], "a Secret value was written to an object"


def test_operator_crash_mid_training_creates_no_duplicates(cluster, namespace, operator, pods, operator_kubeconfig,
                                                           tmp_path):
    pods.on("train", 0, TrainSummary(), delay="60s")
    before = start_training(cluster, namespace, "crash", pods)
    operator.kill()
    # Watching this namespace only: earlier tests' namespaces may still be terminating, and an operator
    # that reconciles their jobs writes there (the count below is cluster-wide).
    restarted = Operator(operator_kubeconfig, tmp_path / "restarted.log", FT_WATCH_NAMESPACES=namespace).start()
    try:
        wait_for("the restarted operator to settle", lambda: restarted.requests() is not None, timeout=10)
        time.sleep(5)
        after = status(cluster, namespace, "crash")
        assert after["phase"] == "Training" and after["attempts"] == before["attempts"]
        assert names_of(cluster, namespace, "jobs") == ["crash-prepare", "crash-train-a0"]
        creates = {k: v for k, v in restarted.requests().items() if k[0] in ("create", "patch") and k[1] != "events"}
        assert creates == {}, f"the restarted operator wrote {creates}"
    finally:
        restarted.stop()


def test_deleting_a_job_mid_training_leaves_no_children(cluster, namespace, operator, pods):
    pods.on("train", 0, TrainSummary(), delay="60s")
    start_training(cluster, namespace, "gone", pods)
    cluster.kubectl("delete", "finetunejob", "gone", "-n", namespace, "--wait=true", timeout=60)
    for kind in ("jobs", "configmaps", "services", "pods"):
        wait_for(f"no {kind} of the deleted job", lambda k=kind: not [
            n for n in names_of(cluster, namespace, k) if n.startswith("gone-")], timeout=60)


def test_a_job_past_its_namespaces_cap_is_rejected_with_the_rules_name(cluster, operator_kubeconfig, namespace, tmp_path):
    """settings.namespace_caps (Helm policy.namespaces.<ns>.maxConcurrentJobs): the operator counts the
    namespace's started jobs; one past the cap ends Rejected, named by the rule, with an Event."""
    caps = json.dumps({namespace: {"maxConcurrentJobs": 1}})
    op = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_NAMESPACE_CAPS=caps).start()
    try:
        setup_namespace(cluster, namespace)
        cluster.apply({**ftj("first"), "metadata": {"name": "first", "namespace": namespace}})
        wait_phase(cluster, namespace, "first", "Validating")  # no PodDriver: its prepare pod keeps running
        cluster.apply({**ftj("second"), "metadata": {"name": "second", "namespace": namespace}})
        rejected = wait_phase(cluster, namespace, "second", "Rejected")
        assert rejected["reason"] == "MaxConcurrentJobs"
        assert rejected["message"].startswith(
            f"namespaces.{namespace}.maxConcurrentJobs: {namespace} already runs 1 jobs, its cap is 1")
        wait_for("the MaxConcurrentJobs Event", lambda: "MaxConcurrentJobs" in events_of(cluster, namespace, "second"))
        assert names_of(cluster, namespace, "jobs") == ["first-prepare"]
    finally:
        op.stop()

"""Reducing Jobs, Pods and Workloads (as the API server returns them) to decision inputs."""

import pytest

from finetune_api.contract.summaries import EvaluateSummary, MergeSummary, TrainSummary
from finetune_operator.reconcile import job_state, pod_state, workload_state
from finetune_operator.reconcile.observed import with_pods

pytestmark = pytest.mark.unit


def pod(code, message="", disrupted=False, index="0"):
    return {
        "metadata": {"name": f"demo-train-a0-{index}-x", "annotations": {"batch.kubernetes.io/job-completion-index": index}},
        "status": {
            "phase": "Failed", "startTime": "2030-01-01T11:00:00Z",
            "conditions": [{"type": "DisruptionTarget", "status": "True"}] if disrupted else [],
            "containerStatuses": [{"name": "trainer", "state": {"terminated": {
                "exitCode": code, "reason": "Error", "message": message}}}],
        },
    }


def test_init_container_messages_are_kept_for_the_merge_summary():
    body = pod(0, EvaluateSummary(passed=True).encode())
    body["status"]["initContainerStatuses"] = [{"name": "merge", "state": {"terminated": {
        "exitCode": 0, "message": MergeSummary(dtype="float32").encode()}}}]
    state = job_state({"metadata": {"name": "demo-eval"}, "status": {}}, [pod_state(body)])
    merge, evaluation = state.summary(MergeSummary), state.summary(EvaluateSummary)
    assert merge is not None and merge.dtype == "float32" and evaluation is not None and evaluation.passed


def failed_job(message: str, reason: str = "PodFailurePolicy"):
    return {"metadata": {"name": "demo-train-a0", "annotations": {"finetune.dev/generation": "3"}},
            "spec": {"suspend": False},
            "status": {"startTime": "2030-01-01T11:00:00Z", "conditions": [
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": "2030-01-01T11:30:00Z"}]}}


def test_user_error_from_the_pod_failure_policy_with_the_trainers_message():
    summary = TrainSummary.failure("UserError", "datasets.train line 3: empty assistant turn").encode()
    state = job_state(failed_job("Container trainer for pod x failed with exit code 1 matching FailJob rule at index 0"),
                      [pod_state(pod(1, summary))])
    assert state.outcome == "failed" and state.failure_class() == "user"
    assert state.failure_text() == "datasets.train line 3: empty assistant turn"
    assert state.generation == 3 and state.finished_at == "2030-01-01T11:30:00Z"


def test_killed_pod_is_an_infrastructure_failure_named_by_its_exit_code():
    state = job_state(failed_job("Job has reached the specified backoff limit", "BackoffLimitExceeded"),
                      [pod_state(pod(137))])
    assert state.failure_class() == "infrastructure"
    assert state.failure_text().startswith("exit code 137")


def test_disruption_is_preemption():
    state = job_state(failed_job("Pod x has condition DisruptionTarget matching FailJob rule at index 1"),
                      [pod_state(pod(143, disrupted=True))])
    assert state.failure_class() == "preempted"


def test_complete_job_succeeds_and_summary_comes_from_rank_zero():
    body = {"metadata": {"name": "demo-eval"}, "status": {"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2030-01-01T11:40:00Z"}]}}
    pods = [pod_state(pod(0, EvaluateSummary(score="rank 1").encode(), index="1")),
            pod_state(pod(0, EvaluateSummary(score="rank 0").encode(), index="0"))]
    state = job_state(body, pods)
    summary = state.summary(EvaluateSummary)
    assert state.outcome == "succeeded" and summary is not None and summary.score == "rank 0"
    assert state.summary(TrainSummary) is None  # another phase's shape is not this phase's summary


def test_workload_admission_and_flavor():
    wl = {"metadata": {"name": "job-demo-train-a0"}, "status": {
        "conditions": [{"type": "QuotaReserved", "status": "True"}, {"type": "Admitted", "status": "True"}],
        "admission": {"podSetAssignments": [{"flavors": {"nvidia.com/gpu": "a100"}}]}}}
    state = workload_state(wl)
    assert state.admitted and state.quota_reserved and state.flavor == "a100"


def test_why_a_pod_waits_from_its_container_statuses_or_its_scheduling():
    pulling = pod_state({"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "vllm", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}})
    assert pulling.waiting == "ImagePullBackOff: Back-off pulling image"
    creating = pod_state({"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "vllm", "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
    assert creating.waiting == "", "an ordinary start is not a reason"
    unscheduled = pod_state({"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": '0/2 nodes are available: persistentvolumeclaim "models" not found'}]}})
    assert unscheduled.waiting == 'Unschedulable: 0/2 nodes are available: persistentvolumeclaim "models" not found'


def test_children_carry_their_controllers_uid():
    owners = [{"kind": "FineTuneJob", "name": "demo", "uid": "u-1", "controller": True},
              {"kind": "FineTuneJob", "name": "peer", "uid": "u-2", "controller": False}]
    body = failed_job("x")
    body["metadata"].update(uid="j-1", ownerReferences=owners)
    state = job_state(body)
    assert (state.uid, state.owner_uid) == ("j-1", "u-1")
    assert pod_state({"metadata": {"name": "p", "ownerReferences": [{"uid": "j-1", "controller": True}]}}).owner_uid == "j-1"
    assert job_state({"metadata": {"name": "orphan"}}).owner_uid == ""


def test_a_job_ended_before_its_pods_are_seen_ended_is_still_running():
    """The Job's watch event can come before its pod's: until a pod is seen ended, the summary it carries
    cannot be read, so the Job counts as running (a pod event reconciles again)."""
    body = {"metadata": {"name": "demo-shadow"}, "status": {"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2030-01-01T11:40:00Z"}]}}
    running = pod_state({"metadata": {"name": "demo-shadow-x"}, "status": {"phase": "Running"}})
    ended = pod_state(pod(0, EvaluateSummary(score="ok").encode()))
    assert with_pods(job_state(body), (running,)).outcome == "running"
    seen = with_pods(job_state(body), (ended,))
    assert seen.outcome == "succeeded" and seen.summary(EvaluateSummary) is not None
    assert with_pods(job_state(body), ()).outcome == "succeeded"  # its pods are gone: nothing to wait for
    # an init container that failed (the fetch step) ends its pod without a main container's exit code
    init_failed = pod_state({"metadata": {"name": "demo-prepare-x"}, "status": {"phase": "Failed", "initContainerStatuses": [
        {"name": "fetch", "state": {"terminated": {"exitCode": 1, "message": "no such file"}}}]}})
    assert init_failed.exit_code is None
    failed = with_pods(job_state(failed_job("Container fetch failed with exit code 1 matching FailJob rule at index 0")), (init_failed,))
    assert failed.outcome == "failed"

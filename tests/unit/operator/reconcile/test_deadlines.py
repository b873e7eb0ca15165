"""Phase deadlines: every waiting phase ends, `Failed` with a reason that names the phase and what it waited for."""

from __future__ import annotations

import datetime as dt

import pytest

from finetune_operator.builders import build_training_job
from finetune_operator.deadlines import deadline_remaining_seconds, phase_deadline_seconds, training_deadline_seconds
from finetune_operator.reconcile import Delete, ServingState, decide, job_state, pod_state
from finetune_operator.settings import OperatorSettings

from .conftest import NOW, children, job, make_job, status_patch

pytestmark = pytest.mark.unit


def started(phase: str, seconds_ago: float, **status) -> dict:
    at = (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"phase": phase, "phaseStartedAt": at, "observedGeneration": 1, **status}


def waiting_pod(reason: str, message: str, name: str = "pod-0") -> dict:
    """A pod as the API server returns it while its container waits."""
    return {"metadata": {"name": name}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "main", "ready": False, "state": {"waiting": {"reason": reason, "message": message}}}]}}


def test_spec_deadlines_override_the_operator_settings():
    settings = OperatorSettings(validating_deadline_seconds=100, deploying_deadline_seconds=200)
    assert phase_deadline_seconds(make_job(), "Validating", settings) == 100
    assert phase_deadline_seconds(make_job(deadlines={"validatingSeconds": 7}), "Validating", settings) == 7
    assert phase_deadline_seconds(make_job(), "Deploying", settings) == 200
    assert phase_deadline_seconds(make_job(), "Evaluating", settings) == settings.evaluating_deadline_seconds
    assert phase_deadline_seconds(make_job(), "Queued", settings) is None, "the queue explains a wait, not a deadline"


def test_remaining_time_counts_from_the_phase_start(settings):
    job_ = make_job(started("Deploying", 600), deadlines={"deployingSeconds": 900})
    assert deadline_remaining_seconds(job_, NOW, settings) == 300
    assert deadline_remaining_seconds(make_job(started("Training", 600)), NOW, settings) is None


def test_a_phase_within_its_deadline_is_left_alone(settings):
    job_ = make_job(started("Validating", 59), deadlines={"validatingSeconds": 60})
    assert decide(job_, children(job("demo-prepare")), NOW, settings) == []


def test_validating_past_its_deadline_fails_naming_the_stuck_pod_and_stops_the_prepare_job(settings):
    pod = pod_state(waiting_pod("CreateContainerConfigError", 'persistentvolumeclaim "data" not found', "demo-prepare-x"))
    job_ = make_job(started("Validating", 61), deadlines={"validatingSeconds": 60})
    actions = decide(job_, children(job("demo-prepare", pods=(pod,))), NOW, settings)
    patch = status_patch(actions)
    assert (patch["phase"], patch["reason"]) == ("Failed", "ValidatingDeadlineExceeded")
    assert patch["message"] == ("Validating exceeded its deadline of 60s: the prepare Job (data checks) did not finish: "
                                'pod demo-prepare-x: CreateContainerConfigError: persistentvolumeclaim "data" not found')
    assert Delete("Job", "demo-prepare") in actions


def test_evaluating_past_its_deadline_fails(settings):
    running = pod_state({"metadata": {"name": "demo-eval-x"}, "status": {"phase": "Running"}})
    job_ = make_job(started("Evaluating", 21601, conditions=[]))
    patch = status_patch(decide(job_, children(job("demo-eval", pods=(running,))), NOW, settings))
    assert patch["reason"] == "EvaluatingDeadlineExceeded"
    assert patch["message"].endswith("the evaluation Job did not finish: pod demo-eval-x still running")


def test_deploying_with_a_vllm_pod_that_never_became_ready_fails_with_the_pods_reason(settings):
    serving = ServingState(ready=False, message="vllm-tiny 0/1 ready",
                           pods_waiting='ImagePullBackOff: Back-off pulling image "vllm/vllm-openai:v0.32.0"')
    job_ = make_job(started("Deploying", 3601))
    patch = status_patch(decide(job_, children(serving=serving), NOW, settings))
    assert (patch["phase"], patch["reason"]) == ("Failed", "DeployingDeadlineExceeded")
    assert patch["message"] == ('Deploying exceeded its deadline of 3600s: vLLM pod never became ready: '
                                'ImagePullBackOff: Back-off pulling image "vllm/vllm-openai:v0.32.0"')
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeployingDeadlineExceeded")


def test_deploying_with_a_failing_smoke_request_says_so(settings):
    serving = ServingState(ready=True, ready_replicas=1, smoke_ok=False, smoke_message="smoke request: HTTP 404: no model")
    patch = status_patch(decide(make_job(started("Deploying", 3601)), children(serving=serving), NOW, settings))
    assert patch["message"].endswith("vLLM is ready but the smoke request never succeeded: smoke request: HTTP 404: no model")


# -- Training: the Job's activeDeadlineSeconds ---------------------------------------------------------

def test_training_deadline_is_estimated_from_the_data_with_a_margin():
    settings = OperatorSettings(training_tokens_per_gpu_second=100, training_deadline_margin=2,
                                training_deadline_floor_seconds=60)
    job_ = make_job(started("Queued", 1, data={"trainTokens": 240000}), hyperparameters={"epochs": 2})
    # 240000 tokens x 2 epochs / (100 tokens/s x 2 nodes x 4 GPUs) = 600 s, x 2 margin
    assert training_deadline_seconds(job_, settings) == 1200
    assert build_training_job(job_, settings, attempt=0)["spec"]["activeDeadlineSeconds"] == 1200


def test_training_deadline_floor_spec_and_default():
    settings = OperatorSettings(training_deadline_floor_seconds=3600, training_deadline_seconds=86400)
    small = make_job(started("Queued", 1, data={"trainTokens": 10}))
    assert training_deadline_seconds(small, settings) == 3600
    assert training_deadline_seconds(make_job(), settings) == 86400, "no data report yet: the operator's default"
    assert training_deadline_seconds(make_job(deadlines={"trainingSeconds": 5}), settings) == 5


def test_a_training_job_past_its_deadline_fails_the_job_without_a_retry(settings):
    body = {"metadata": {"name": "demo-train-a0"}, "spec": {},
            "status": {"startTime": "2030-01-01T11:00:00Z", "conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline", "lastTransitionTime": "2030-01-01T11:50:00Z"}]}}
    stuck = pod_state(waiting_pod("ImagePullBackOff", 'Back-off pulling image "trainer:0.1.0"', "demo-train-a0-0"))
    train = job_state(body, [stuck])
    assert train.failure_class() == "deadline"
    job_ = make_job(started("Training", 3000, attempts={"count": 1}, queue={"name": "default", "admitted": True}),
                    deadlines={"trainingSeconds": 3000})
    patch = status_patch(decide(job_, children(train), NOW, settings))
    assert (patch["phase"], patch["reason"]) == ("Failed", "TrainingDeadlineExceeded")
    assert patch["message"] == ("Training attempt 0 exceeded its deadline of 3000s (activeDeadlineSeconds): "
                                'pod demo-train-a0-0: ImagePullBackOff: Back-off pulling image "trainer:0.1.0"')
    assert patch["queue"] == {"admitted": False} and patch["attempts"]["count"] == 1

"""Every transition of the FineTuneJob state machine, from status + observed children to actions."""

from __future__ import annotations

import dataclasses

import pytest

from finetune_api.contract.artifacts import ArtifactRef
from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.summaries import EvaluateSummary, MergeSummary, PrepareSummary, TrainSummary
from finetune_api.contract.upload import UploadedObject, UploadSummary
from finetune_api.job import DataReport, GateResult, MetricResult
from finetune_operator.reconcile import (
    Apply, Create, Delete, DeleteServing, Emit, JudgePool, NamespaceUsage, Observe, PatchStatus, Requeue, ServingState,
    WorkloadState, decide,
    writes,
)
from finetune_operator.settings import NamespaceCaps, OperatorSettings

from .conftest import NOW, apply_patch, children, ended, job, make_job, status_patch

pytestmark = pytest.mark.unit

T0 = "2030-01-01T11:00:00Z"


def at_phase(phase: str, **status) -> dict:
    return {"phase": phase, "phaseStartedAt": T0, "observedGeneration": 1, **status}


def training(count: int = 1, **attempts) -> dict:
    return at_phase("Training", attempts={"count": count, **attempts},
                    queue={"name": "default", "admitted": True, "flavor": "a100"})


def creates(actions) -> list:
    return [a for a in actions if isinstance(a, (Create, Apply))]


def events(actions) -> list[Emit]:
    return [a for a in actions if isinstance(a, Emit)]


# -- Pending / Validating -------------------------------------------------------------------------

def test_new_job_starts_validating_with_config_and_prepare_job(settings):
    actions = decide(make_job(), children(), NOW, settings)
    assert creates(actions) == [Create("config"), Create("prepare")]
    patch = status_patch(actions)
    assert patch["phase"] == "Validating" and patch["observedGeneration"] == 1
    assert patch["startTime"] == "2030-01-01T12:00:00Z"
    assert [c["type"] for c in patch["conditions"]] == ["Validated"]
    assert [e.reason for e in events(actions)] == ["Validating"]
    # creations come before the status patch that records them
    assert actions.index(Create("prepare")) < actions.index(PatchStatus(patch))


def test_an_adapter_no_pool_can_load_fails_before_any_work(settings):
    actions = decide(make_job(adapter={"r": 128}, serving={"mode": "adapter"}), children(), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "ServingNotPossible"
    assert "spec.adapter.r=128 is above the adapter pools' maxLoraRank 64" in patch["message"]
    assert [e.reason for e in events(actions)] == ["ServingNotPossible"]
    merged = decide(make_job(adapter={"r": 128}, serving={"mode": "merged"}), children(), NOW, settings)
    assert status_patch(merged)["phase"] == "Validating"


def test_an_adapter_job_named_like_its_pools_base_model_fails_before_any_work(settings):
    named_like_base = {"uri": "pvc://models/tiny", "name": "demo"}  # the job is `demo`
    actions = decide(make_job(model=named_like_base, serving={"mode": "adapter"}), children(), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "ServingNotPossible"
    assert patch["message"].startswith("metadata.name 'demo' is the name its base model is served under")
    merged = decide(make_job(model=named_like_base, serving={"mode": "merged"}), children(), NOW, settings)
    assert status_patch(merged)["phase"] == "Validating"


def test_validating_recreates_a_missing_prepare_job_without_writing_status(settings):
    actions = decide(make_job(at_phase("Validating")), children(), NOW, settings)
    assert actions == [Create("config"), Create("prepare")]


def test_validating_waits_while_the_prepare_job_runs(settings):
    assert decide(make_job(at_phase("Validating")), children(job("demo-prepare")), NOW, settings) == []


def prepared(data: dict | None = None):
    report = DataReport.model_validate(data or {"trainExamples": 120, "evalExamples": 20, "dropped": {"dup": 3}})
    message = PrepareSummary(data=report).encode()
    return job("demo-prepare", "succeeded", (ended(0, message),))


def test_valid_data_queues_the_job_with_the_data_report(settings):
    actions = decide(make_job(at_phase("Validating")), children(prepared()), NOW, settings)
    patch = status_patch(actions)
    assert patch["phase"] == "Queued"
    assert patch["data"]["trainExamples"] == 120 and patch["data"]["dropped"] == {"dup": 3}
    assert patch["queue"] == {"name": "default", "admitted": False, "evictionRequested": False}
    validated = next(c for c in patch["conditions"] if c["type"] == "Validated")
    assert validated["status"] == "True" and validated["reason"] == "DataValid"
    assert creates(actions) == []
    assert Observe("phase_seconds", 3600.0, {"phase": "Validating"}) in actions


def test_valid_data_without_a_queue_starts_training_attempt_zero():
    actions = decide(make_job(at_phase("Validating")), children(prepared()), NOW, OperatorSettings(queue_mode="none"))
    assert creates(actions) == [Create("train-service"), Create("train", attempt=0)]
    patch = status_patch(actions)
    assert patch["phase"] == "Training" and patch["attempts"]["count"] == 1


def test_valid_data_in_kueue_mode_creates_the_suspended_training_job_at_once():
    actions = decide(make_job(at_phase("Validating")), children(prepared()), NOW, OperatorSettings(queue_mode="kueue"))
    assert creates(actions) == [Create("train-service"), Create("train", attempt=0)]
    patch = status_patch(actions)
    assert patch["phase"] == "Queued" and patch["attempts"]["count"] == 1


def test_bad_data_fails_with_the_trainers_reason(settings):
    message = PrepareSummary.failure("UserError", "datasets.train line 7: missing 'messages'",
                                     data=DataReport(train_examples=6)).encode()
    prep = job("demo-prepare", "failed", (ended(1, message),), failure_reason="user")
    actions = decide(make_job(at_phase("Validating")), children(prep), NOW, settings)
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "ValidationFailed"
    assert patch["message"] == "datasets.train line 7: missing 'messages'"
    assert patch["data"]["trainExamples"] == 6
    assert events(actions)[0].type == "Warning"
    assert creates(actions) == []


def test_a_prepare_that_succeeds_without_its_data_report_fails_instead_of_passing_unchecked_data(settings):
    prep = job("demo-prepare", "succeeded", (ended(0),))
    actions = decide(make_job(at_phase("Validating")), children(prep), NOW, settings)
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "PrepareFailed"
    assert "left no data report" in patch["message"]
    assert creates(actions) == [] and "queue" not in patch


# -- Queued -----------------------------------------------------------------------------------------

def test_queued_job_waits_until_admitted(settings):
    status = at_phase("Queued", queue={"name": "default", "admitted": False, "position": 3})
    assert writes(decide(make_job(status), children(), NOW, settings)) == []


def test_admission_creates_service_and_first_attempt_and_records_queue_wait(settings):
    status = at_phase("Queued", queue={"name": "default", "admitted": True, "flavor": "a100"})
    actions = decide(make_job(status), children(), NOW, settings)
    assert creates(actions) == [Create("train-service"), Create("train", attempt=0)]
    patch = status_patch(actions)
    assert patch["phase"] == "Training" and patch["attempts"]["count"] == 1
    assert patch["queue"]["admittedAt"] == "2030-01-01T12:00:00Z"
    admitted = next(c for c in patch["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "True"
    assert Observe("queue_wait_seconds", 3600.0, {"queue": "default"}) in actions


def test_readmission_waits_for_the_evicted_attempt_to_stop(settings):
    status = at_phase("Queued", queue={"name": "default", "admitted": True}, attempts={"count": 1, "preemptions": 1})
    actions = decide(make_job(status), children(job("demo-train-a0", deleting=True)), NOW, settings)
    assert creates(actions) == []
    actions = decide(make_job(status), children(job("demo-train-a0", "failed", deleting=True)), NOW, settings)
    assert creates(actions) == [Create("train-service"), Create("train", attempt=1)]


def test_kueue_mirrors_the_workload_then_follows_the_unsuspended_job():
    kueue = OperatorSettings(queue_mode="kueue")
    status = at_phase("Queued", attempts={"count": 1}, queue={"name": "lq", "admitted": False})
    wl = WorkloadState(name="job-demo-train-a0", admitted=False, quota_reserved=False, message="waiting for quota")
    actions = decide(make_job(status), children(job("demo-train-a0", suspended=True), workload=wl), NOW, kueue)
    assert status_patch(actions)["queue"]["message"] == "waiting for quota"
    assert "phase" not in status_patch(actions)
    wl = dataclasses.replace(wl, admitted=True, flavor="a100", message="")
    actions = decide(make_job(status), children(job("demo-train-a0", suspended=False), workload=wl), NOW, kueue)
    patch = status_patch(actions)
    assert patch["phase"] == "Training" and patch["queue"]["admitted"] is True and patch["queue"]["flavor"] == "a100"
    assert creates(actions) == []


# -- Training -------------------------------------------------------------------------------------

def test_training_recreates_a_missing_attempt_job(settings):
    assert decide(make_job(training()), children(), NOW, settings) == [Create("train-service"), Create("train", attempt=0)]


def test_progress_is_written_once_and_refreshed_on_a_timer(settings):
    progress = ProgressEvent(step=40, total_steps=100, epoch=1.2, loss=1.234, eval_loss=1.5, learning_rate=1e-4,
                             tokens_per_second=5000.0, eta_seconds=90)
    actions = decide(make_job(training()), children(job("demo-train-a0"), progress=progress), NOW, settings)
    patch = status_patch(actions)
    assert patch == {"progress": {"step": 40, "totalSteps": 100, "epoch": 1.2, "loss": 1.234, "evalLoss": 1.5,
                                  "learningRate": 1e-4, "tokensPerSecond": 5000.0, "etaSeconds": 90, "percent": 40,
                                  "summary": "40/100 loss 1.234 val 1.5", "updatedAt": "2030-01-01T12:00:00Z"}}
    assert Requeue(settings.progress_interval_seconds) in actions
    assert events(actions) == []
    again = decide(apply_patch(make_job(training()), patch), children(job("demo-train-a0"), progress=progress), NOW,
                   settings)
    assert writes(again) == [] and Requeue(settings.progress_interval_seconds) in again


def a0(outcome: str, *pods, **kw):
    kw.setdefault("started_at", "2030-01-01T11:00:00Z")
    kw.setdefault("finished_at", "2030-01-01T11:30:00Z")
    return job("demo-train-a0", outcome, tuple(pods), **kw)


def test_trained_job_moves_to_evaluating_and_counts_gpu_time(settings):
    """A CPU-only evaluation (serving.gpus 0) starts at once, as it always did."""
    message = TrainSummary(step=100, total_steps=100, train_loss=0.5, eval_loss=0.75, train_tokens=12345,
                           weights=ArtifactRef(path="adapter", digest="sha256:ab"),
                           checkpoint=ArtifactRef(path="checkpoints/checkpoint-100")).encode()
    actions = decide(make_job(training(), serving={"gpus": 0}), children(a0("succeeded", ended(0, message))), NOW, settings)
    assert creates(actions) == [Create("eval")]
    patch = status_patch(actions)
    assert patch["phase"] == "Evaluating"
    assert patch["gpuSeconds"] == 1800 * 2 * 4
    assert patch["progress"]["step"] == 100 and patch["progress"]["percent"] == 100
    assert (patch["progress"]["loss"], patch["progress"]["evalLoss"]) == (0.5, 0.75)
    assert patch["progress"]["summary"] == "done loss 0.5 val 0.75"
    root = "pvc://finetune-artifacts/team/demo"
    assert patch["artifacts"] == {"root": root, "adapter": f"{root}/adapter", "adapterDigest": "sha256:ab",
                                  "checkpoint": f"{root}/checkpoints/checkpoint-100"}
    assert patch["queue"]["admitted"] is False  # the quota is released
    assert Observe("gpu_hours", 4.0, {"namespace": "team"}) in actions


def test_trained_job_without_evaluation_or_serving_succeeds(settings):
    j = make_job(training(), evaluation={"enabled": False}, serving={"enabled": False})
    patch = status_patch(decide(j, children(a0("succeeded", ended(0))), NOW, settings))
    assert patch["phase"] == "Succeeded" and patch["completionTime"]


def test_user_error_in_training_fails_at_once_without_retry(settings):
    pod = ended(1, TrainSummary.failure("UserError", "hyperparameters.learningRate: loss is NaN").encode())
    actions = decide(make_job(training()), children(a0("failed", pod, failure_reason="user")), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "TrainingFailed"
    assert "loss is NaN" in patch["message"]
    assert Observe("retry", 1, {"class": "user"}) in actions


def test_infrastructure_failure_waits_for_the_backoff(settings):
    failed = a0("failed", ended(137), finished_at="2030-01-01T11:59:50Z")
    actions = decide(make_job(training()), children(failed), NOW, settings)
    assert creates(actions) == []
    assert Requeue(20.0) in actions
    patch = status_patch(actions)
    assert patch["reason"] == "BackoffRetry" and "exit code 137" in patch["message"]
    assert "phase" not in patch and events(actions) == []
    again = decide(apply_patch(make_job(training()), patch), children(failed), NOW, settings)
    assert writes(again) == []


def test_infrastructure_failure_retries_as_the_next_attempt_after_the_backoff(settings):
    actions = decide(make_job(training()), children(a0("failed", ended(137))), NOW, settings)
    assert creates(actions) == [Create("train", attempt=1)]
    patch = status_patch(actions)
    assert patch["attempts"]["count"] == 2 and patch["attempts"]["infrastructureFailures"] == 1
    assert patch["attempts"]["lastFailure"].startswith("attempt 0: exit code 137")
    assert [e.reason for e in events(actions)] == ["Retrying"]
    assert Observe("retry", 1, {"class": "infrastructure"}) in actions
    # the next reconcile looks at attempt 1 only: the failure is not counted twice
    again = decide(apply_patch(make_job(training()), patch), children(a0("failed", ended(137))), NOW, settings)
    assert again == [Create("train-service"), Create("train", attempt=1)]


def test_retry_budget_exhausted_fails(settings):
    status = training(count=3, infrastructureFailures=2)
    failed = job("demo-train-a2", "failed", (ended(2),), finished_at=T0)
    patch = status_patch(decide(make_job(status), children(failed), NOW, settings))
    assert patch["phase"] == "Failed" and patch["reason"] == "RetriesExhausted"
    assert patch["attempts"]["infrastructureFailures"] == 3
    assert "3 of 3 attempts used" in patch["message"]


def test_preemption_retries_at_once_without_spending_the_budget(settings):
    failed = a0("failed", ended(143, disrupted=True), failure_reason="preempted", finished_at="2030-01-01T11:59:59Z")
    actions = decide(make_job(training()), children(failed), NOW, settings)
    assert creates(actions) == [Create("train", attempt=1)]
    attempts = apply_patch(make_job(training()), status_patch(actions)).status.attempts
    assert (attempts.count, attempts.preemptions, attempts.infrastructure_failures) == (2, 1, 0)
    assert Observe("retry", 1, {"class": "preempted"}) in actions


def test_preemptions_past_the_operators_cap_fail_the_job(settings):
    capped = settings.model_copy(update={"max_preemptions": 2})
    status = training(count=3, preemptions=2)
    failed = job("demo-train-a2", "failed", (ended(143, disrupted=True),), failure_reason="preempted", finished_at=T0)
    actions = decide(make_job(status), children(failed), NOW, capped)
    assert not creates(actions)
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "PreemptionsExhausted"
    assert "3 preemptions exceed the operator's limit of 2 (Helm jobs.maxPreemptions)" in patch["message"]
    assert patch["attempts"]["preemptions"] == 3 and patch["queue"]["admitted"] is False
    assert [e.reason for e in events(actions)] == ["PreemptionsExhausted"]
    # the second preemption is still free
    below = decide(make_job(training(count=2, preemptions=1)), children(
        job("demo-train-a1", "failed", (ended(143, disrupted=True),), failure_reason="preempted", finished_at=T0)),
        NOW, capped)
    assert creates(below) == [Create("train", attempt=2)]


def test_a_queue_eviction_past_the_cap_stops_the_gang_and_fails(settings):
    status = training(count=1, preemptions=1)
    status["queue"]["evictionRequested"] = True
    capped = settings.model_copy(update={"max_preemptions": 1})
    actions = decide(make_job(status), children(a0("running", finished_at=None), eviction_grace_seconds=90), NOW, capped)
    assert Delete("Job", "demo-train-a0", "Foreground", 90) in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "PreemptionsExhausted"
    assert patch["queue"]["evictionRequested"] is False


def test_queue_eviction_stops_the_gang_and_requeues_without_spending_the_budget(settings):
    status = training()
    status["queue"]["evictionRequested"] = True
    actions = decide(make_job(status), children(a0("running", finished_at=None), eviction_grace_seconds=90), NOW, settings)
    assert Delete("Job", "demo-train-a0", "Foreground", 90) in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Queued" and patch["reason"] == "Preempted"
    assert patch["queue"]["admitted"] is False and patch["queue"]["evictionRequested"] is False
    attempts = apply_patch(make_job(status), patch).status.attempts
    assert (attempts.preemptions, attempts.infrastructure_failures) == (1, 0)
    assert attempts.count == 1  # the next admission starts attempt 1
    readmitted = apply_patch(make_job(status), {**patch, "queue": {"admitted": True}})
    assert creates(decide(readmitted, children(), NOW, settings)) == [Create("train-service"), Create("train", attempt=1)]


# -- Failed is sticky --------------------------------------------------------------------------------

def test_failed_is_sticky_whatever_the_children_say(settings):
    status = at_phase("Failed", attempts={"count": 1})
    assert decide(make_job(status), children(), NOW, settings) == []
    assert decide(make_job(status), children(prepared(), a0("succeeded", ended(0))), NOW, settings) == []
    actions = decide(make_job(status, generation=2), children(), NOW, settings)
    assert actions == [PatchStatus({"observedGeneration": 2})]


# -- Evaluating ------------------------------------------------------------------------------------

EVALUATING = at_phase("Evaluating", conditions=[
    {"type": "Evaluated", "status": "False", "reason": "Evaluating", "lastTransitionTime": T0, "observedGeneration": 1}])


def evaluated(passed: bool, gen: int = 1):
    gates = [GateResult(metric="exact_match", passed=passed, message="exact_match: tuned 0.910 ≥ min 0.800" if passed else "exact_match: tuned 0.420 < min 0.800")]
    message = EvaluateSummary(passed=passed, score="exact_match 0.91 (base 0.10)", items=50,
                              metrics=[MetricResult(name="exact_match", base=0.1, tuned=0.91 if passed else 0.42)],
                              gates=gates, report=ArtifactRef(path="eval/report.json")).encode()
    return job("demo-eval", "succeeded", (ended(0, message),), generation=gen)


def test_passed_gates_deploy(settings):
    actions = decide(make_job(EVALUATING), children(evaluated(True)), NOW, settings)
    assert Apply("serving") in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Deploying"
    assert patch["evaluation"]["passed"] is True and patch["evaluation"]["evaluatedGeneration"] == 1
    assert patch["evaluation"]["metrics"][0]["tuned"] == 0.91
    root = "pvc://finetune-artifacts/team/demo"
    assert patch["evaluation"]["reportPath"] == patch["artifacts"]["evalReport"] == f"{root}/eval/report.json"


def test_the_merge_before_the_evaluation_reports_the_merged_model_and_its_digest(settings):
    merged = MergeSummary(merged=ArtifactRef(path="merged", digest="sha256:cd")).encode()
    done = evaluated(True)
    pod = dataclasses.replace(done.pods[0], init_messages=(merged,))
    patch = status_patch(decide(make_job(EVALUATING), children(dataclasses.replace(done, pods=(pod,))), NOW, settings))
    assert patch["artifacts"]["merged"].endswith("/merged") and patch["artifacts"]["mergedDigest"] == "sha256:cd"
    assert patch["evaluation"]["passed"] is True


def test_a_failing_gate_rejects_without_deploying(settings):
    actions = decide(make_job(EVALUATING), children(evaluated(False)), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Rejected" and patch["reason"] == "GatesNotPassed"
    assert patch["message"] == "the tuned model did not pass its gates: exact_match: tuned 0.420 < min 0.800"


def test_evaluation_without_a_summary_fails(settings):
    ev = job("demo-eval", "succeeded", (ended(0),), generation=1)
    patch = status_patch(decide(make_job(EVALUATING), children(ev), NOW, settings))
    assert patch["phase"] == "Failed" and patch["reason"] == "EvaluationFailed"


def test_a_stale_evaluation_job_is_deleted_before_evaluating_again(settings):
    status = dict(EVALUATING, conditions=[dict(EVALUATING["conditions"][0], observedGeneration=2)], observedGeneration=2)
    actions = decide(make_job(status, generation=2), children(evaluated(True, gen=1)), NOW, settings)
    assert actions == [Delete("Job", "demo-eval")]
    actions = decide(make_job(status, generation=2), children(), NOW, settings)
    assert actions == [Create("eval")]


# -- Uploading (an s3:// output) -----------------------------------------------------------------------

S3_OUTPUT = {"uri": "s3://results/runs/demo", "secretRef": {"name": "uploader"}}
UPLOADING = at_phase("Uploading", conditions=[
    dict(EVALUATING["conditions"][0], status="True", reason="GatesPassed")])


def uploaded(outcome: str = "succeeded", message: str | None = None, gen: int = 1):
    if message is None:
        message = UploadSummary(bucket="results", prefix="runs/demo", count=2, bytes=17284,
                                manifest=UploadedObject(key="runs/demo/upload.json", etag='"e3"', bytes=310)).encode()
    code = 0 if outcome == "succeeded" else 1
    return job("demo-upload", outcome, (ended(code, message),), generation=gen)


def test_an_s3_output_starts_like_a_volume_output(settings):
    """No refusal: the artifacts go to the artifacts claim, the upload comes after the gates."""
    actions = decide(make_job(output=S3_OUTPUT), children(), NOW, settings)
    assert creates(actions) == [Create("config"), Create("prepare")]
    assert status_patch(actions)["phase"] == "Validating"


def test_passed_gates_upload_before_deploying(settings):
    actions = decide(make_job(EVALUATING, output=S3_OUTPUT), children(evaluated(True)), NOW, settings)
    assert creates(actions) == [Create("upload")]
    patch = status_patch(actions)
    assert patch["phase"] == "Uploading" and patch["evaluation"]["passed"] is True
    assert patch["artifacts"]["root"] == "pvc://finetune-artifacts/team/demo"  # written to the claim
    assert {c["type"]: c["status"] for c in patch["conditions"]}["Uploaded"] == "False"


def test_trained_without_evaluation_uploads(settings):
    j = make_job(training(), output=S3_OUTPUT, evaluation={"enabled": False})
    actions = decide(j, children(a0("succeeded", ended(0))), NOW, settings)
    assert creates(actions) == [Create("upload")]
    assert status_patch(actions)["phase"] == "Uploading"


def test_an_upload_records_keys_and_etags_then_deploys(settings):
    actions = decide(make_job(UPLOADING, output=S3_OUTPUT), children(uploaded()), NOW, settings)
    assert Apply("serving") in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Deploying"
    assert patch["artifacts"] == {"uploaded": {
        "uri": "s3://results/runs/demo", "count": 2, "bytes": 17284,
        "manifest": {"key": "runs/demo/upload.json", "etag": '"e3"', "bytes": 310},
        "record": "pvc://finetune-artifacts/team/demo/upload.json"}}
    assert patch["message"] == "2 object(s) uploaded to s3://results/runs/demo; deploying"


def test_an_upload_without_serving_succeeds(settings):
    j = make_job(UPLOADING, output=S3_OUTPUT, serving={"enabled": False})
    patch = status_patch(decide(j, children(uploaded()), NOW, settings))
    assert patch["phase"] == "Succeeded" and patch["reason"] == "Uploaded"


def test_a_running_upload_waits_and_a_missing_one_is_created(settings):
    assert writes(decide(make_job(UPLOADING, output=S3_OUTPUT), children(job("demo-upload", generation=1)), NOW, settings)) == []
    assert decide(make_job(UPLOADING, output=S3_OUTPUT), children(), NOW, settings) == [Create("upload")]


def test_a_failed_upload_fails_naming_the_bucket_and_key(settings):
    denied = UploadSummary.failure("UserError", "s3://results/runs/demo/adapter/adapter_config.json: access denied "
                                   "(PermissionDeniedError); check spec.output.secretRef").encode()
    actions = decide(make_job(UPLOADING, output=S3_OUTPUT), children(uploaded("failed", denied)), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "UploadFailed"
    assert patch["message"] == ("upload to s3://results/runs/demo failed: s3://results/runs/demo/adapter/adapter_config.json: "
                                "access denied (PermissionDeniedError); check spec.output.secretRef")
    assert [e.reason for e in events(actions)] == ["UploadFailed"]


def test_an_upload_past_its_deadline_fails_and_stops_its_job(settings):
    late = dict(UPLOADING, phaseStartedAt="2030-01-01T10:59:00Z")  # 3600 s default, NOW is 12:00
    actions = decide(make_job(late, output=S3_OUTPUT), children(job("demo-upload")), NOW, settings)
    assert Delete("Job", "demo-upload") in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Failed" and patch["reason"] == "UploadingDeadlineExceeded"
    assert patch["message"].startswith("Uploading exceeded its deadline of 3600s: the upload Job did not finish")


def test_an_upload_older_than_the_evaluation_is_replaced(settings):
    status = dict(UPLOADING, conditions=[dict(UPLOADING["conditions"][0], observedGeneration=2)], observedGeneration=2)
    j = make_job(status, generation=2, output=S3_OUTPUT)
    assert decide(j, children(uploaded(gen=1)), NOW, settings) == [Delete("Job", "demo-upload")]


# -- Deploying ---------------------------------------------------------------------------------------

def test_serving_needs_a_ready_replica_and_a_smoke_request(settings):
    status = at_phase("Deploying")
    waiting = ServingState(ready=False, message="0/1 replicas ready")
    actions = decide(make_job(status), children(serving=waiting), NOW, settings)
    assert status_patch(actions)["message"] == "deploying: 0/1 replicas ready"
    assert Requeue(5.0) in actions
    ok = ServingState(ready=True, ready_replicas=1, smoke_ok=True, smoke_message="model demo answered",
                      endpoint="http://demo-serve.team.svc:8000/v1")
    patch = status_patch(decide(make_job(status), children(serving=ok), NOW, settings))
    assert patch["phase"] == "Serving"
    assert patch["serving"]["endpoint"] == "http://demo-serve.team.svc:8000/v1"
    assert patch["serving"]["modelNames"] == ["demo@1", "demo"]
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_deploying_reapplies_missing_serving_objects(settings):
    actions = decide(make_job(at_phase("Deploying")), children(serving=ServingState(message="missing")), NOW, settings)
    assert Apply("serving") in actions and writes(actions) == [Apply("serving")]


# -- spec changes after training -----------------------------------------------------------------

OLD_SPEC = make_job().spec.to_api()


def test_evaluation_change_after_rejection_evaluates_again(settings):
    gates = [{"metric": "exact_match", "min": 0.3}]
    j = make_job(at_phase("Rejected"), generation=2, evaluation={"gates": gates})
    actions = decide(j, children(evaluated(False), config_spec=OLD_SPEC), NOW, settings)
    assert Apply("config") in actions and Delete("Job", "demo-eval") in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Evaluating" and patch["observedGeneration"] == 2
    evaluated_condition = next(c for c in patch["conditions"] if c["type"] == "Evaluated")
    assert evaluated_condition["observedGeneration"] == 2


def test_serving_change_redeploys(settings):
    j = make_job(at_phase("Serving"), generation=2, serving={"replicas": 3})
    actions = decide(j, children(config_spec=OLD_SPEC), NOW, settings)
    assert Apply("config") in actions and Apply("serving") in actions
    assert status_patch(actions)["phase"] == "Deploying"


def test_disabling_serving_removes_the_endpoint(settings):
    j = make_job(at_phase("Serving"), generation=2, serving={"enabled": False})
    actions = decide(j, children(config_spec=OLD_SPEC), NOW, settings)
    assert DeleteServing() in actions
    patch = status_patch(actions)
    assert patch["phase"] == "Succeeded" and patch["serving"] is None


def test_other_changes_only_record_the_generation(settings):
    j = make_job(at_phase("Serving"), generation=2, retry={"maxAttempts": 5})
    actions = decide(j, children(config_spec=OLD_SPEC), NOW, settings)
    assert actions == [Apply("config"), PatchStatus({"observedGeneration": 2})]


def test_spec_change_after_training_waits_for_the_config_spec(settings):
    j = make_job(at_phase("Serving"), generation=2, serving={"replicas": 3})
    assert decide(j, children(), NOW, settings) == []


def test_spec_change_during_training_updates_the_config_only(settings):
    j = make_job(training(), generation=2, evaluation={"maxNewTokens": 32})
    actions = decide(j, children(a0("running", finished_at=None)), NOW, settings)
    assert Apply("config") in actions
    assert status_patch(actions) == {"observedGeneration": 2}


# -- Namespace caps (settings.namespace_caps) ---------------------------------------------------

def test_a_job_past_its_namespaces_caps_is_rejected_with_the_rules_name(settings):
    capped = settings.model_copy(update={"namespace_caps": {"team": NamespaceCaps(max_concurrent_jobs=2, max_gpus=16)}})
    busy = decide(make_job(), children(namespace_usage=NamespaceUsage(jobs=2, gpus=8)), NOW, capped)
    patch = status_patch(busy)
    assert (patch["phase"], patch["reason"]) == ("Rejected", "MaxConcurrentJobs")
    assert patch["message"].startswith("namespaces.team.maxConcurrentJobs: team already runs 2 jobs, its cap is 2")
    assert [e.reason for e in events(busy)] == ["MaxConcurrentJobs"] and not creates(busy)
    # 2 nodes x 4 GPUs on top of 12 held: past 16
    full = status_patch(decide(make_job(), children(namespace_usage=NamespaceUsage(jobs=1, gpus=12)), NOW, capped))
    assert (full["phase"], full["reason"]) == ("Rejected", "MaxGpus")
    assert full["message"] == "namespaces.team.maxGpus: team's started jobs hold 12 GPUs; 8 more exceed its cap of 16"
    within = decide(make_job(), children(namespace_usage=NamespaceUsage(jobs=1, gpus=8)), NOW, capped)
    assert creates(within) == [Create("config"), Create("prepare")]


# -- the pool judge (score_model graders without endpoint; DESIGN.md §9) ----------------------------

POOL_JUDGED = {"graders": [{"name": "helpful", "type": "score_model", "rubric": "is it helpful?"}]}
CPU_ONLY = {"gpus": 0}
"""A CPU-only evaluation starts at once (a GPU one waits for its admission first)."""
TRAINED = TrainSummary(step=10, total_steps=10, weights=ArtifactRef(path="adapter")).encode()


def test_a_pool_judged_grader_without_a_ready_pool_fails_before_training_naming_the_grader(settings):
    for pool in (None, JudgePool(name="vllm-tiny-0123", url=None)):
        actions = decide(make_job(at_phase("Validating"), evaluation=POOL_JUDGED), children(prepared(), judge_pool=pool),
                         NOW, settings)
        patch = status_patch(actions)
        assert patch["phase"] == "Failed" and patch["reason"] == "JudgeEndpointMissing"
        assert patch["message"].startswith("spec.evaluation.graders helpful: a score_model grader without `endpoint`")
        assert "set the grader's `endpoint`" in patch["message"] and creates(actions) == []
    ready = JudgePool(name="vllm-tiny-0123", url="http://10.1.0.7:8000")
    actions = decide(make_job(at_phase("Validating"), evaluation=POOL_JUDGED), children(prepared(), judge_pool=ready),
                     NOW, settings)
    assert status_patch(actions)["phase"] == "Queued"


def test_the_evaluation_job_gets_the_ready_pool_replica_or_the_job_fails_when_the_pool_went_away(settings):
    ready = JudgePool(name="vllm-tiny-0123", url="http://10.1.0.7:8000")
    trained = children(a0("succeeded", ended(0, TRAINED)), judge_pool=ready)
    actions = decide(make_job(training(), evaluation=POOL_JUDGED, serving=CPU_ONLY), trained, NOW, settings)
    assert creates(actions) == [Create("eval", judge_url="http://10.1.0.7:8000")]
    gone = children(a0("succeeded", ended(0, TRAINED)), judge_pool=JudgePool(name="vllm-tiny-0123", url=None))
    actions = decide(make_job(training(), evaluation=POOL_JUDGED, serving=CPU_ONLY), gone, NOW, settings)
    patch = status_patch(actions)
    assert creates(actions) == [] and patch["phase"] == "Failed" and patch["reason"] == "JudgeEndpointMissing"
    evaluated = next(c for c in patch["conditions"] if c["type"] == "Evaluated")
    assert evaluated["status"] == "False" and "adapter pool vllm-tiny-0123" in evaluated["message"]


def test_a_judge_with_its_own_endpoint_needs_no_pool(settings):
    own = {"graders": [{"name": "helpful", "type": "score_model", "rubric": "r", "endpoint": "https://judge.example/v1"}]}
    actions = decide(make_job(training(), evaluation=own, serving=CPU_ONLY), children(a0("succeeded", ended(0, TRAINED))),
                     NOW, settings)
    assert creates(actions) == [Create("eval")]

"""`ftctl status` formatting and `ftctl logs`' choice of pod, from the typed status models and pod objects
(the e2e demo test runs both commands against a real cluster)."""

from __future__ import annotations

import pytest

from finetune_api import FineTuneJob
from finetune_api.job import (
    CanaryStatus,
    EvaluationStatus,
    FineTuneJobStatus,
    GateResult,
    MetricResult,
    Progress,
    ServingStatus,
)
from finetune_cli.cluster import COMPLETION_INDEX, JOB_NAME_LABEL, format_status, pick_pod

pytestmark = pytest.mark.unit


def job(status: FineTuneJobStatus) -> FineTuneJob:
    j = FineTuneJob.model_validate({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "support", "namespace": "team-a"},
        "spec": {"model": {"uri": "pvc://models/tiny"}, "datasets": {"train": {"uri": "pvc://data/train.jsonl"}}},
    })
    j.status = status
    return j


def test_status_of_a_serving_job_shows_progress_evaluation_gates_and_endpoint():
    status = FineTuneJobStatus(
        phase="Serving",
        progress=Progress(step=150, total_steps=150, loss=0.0123, tokens_per_second=812.0),
        evaluation=EvaluationStatus(passed=True, items=100, metrics=[
            MetricResult(name="exact_match", base=0.0, tuned=0.97, delta=0.97)],
            gates=[GateResult(metric="exact_match", passed=True, message="exact_match: tuned 0.970 ≥ min 0.800")]),
        serving=ServingStatus(endpoint="http://support-serve.team-a.svc:8000/v1", model_names=["support"],
                              ready_replicas=1),
    )
    lines = format_status(job(status)).splitlines()
    assert lines[0] == "team-a/support: Serving"
    assert "training: step 150/150, loss 0.0123, 812 tok/s" in lines
    assert "evaluation on 100 held-out items:" in lines
    assert any(line.split() == ["exact_match", "0.000", "0.970", "0.970"] for line in lines), lines
    assert "  gate passed: exact_match: tuned 0.970 ≥ min 0.800" in lines
    assert lines[-1] == "serving: http://support-serve.team-a.svc:8000/v1 models support (1 ready)"


def test_status_of_a_canary_shows_its_state_true_share_and_verdict():
    canary = CanaryStatus(state="RolledBack", split="Replicas", share=0, tuned_replicas=0, base_replicas=3,
                          verdict="canary rolled back on errorRate: HTTP 5xx rate 10.0% (6/60) on the tuned arm")
    status = FineTuneJobStatus(phase="Rejected", serving=ServingStatus(endpoint="http://support.team-a.svc:8000/v1",
                                                                      model_names=["support"], canary=canary))
    assert format_status(job(status)).splitlines()[-1] == (
        "canary: RolledBack, tuned share 0% (Replicas: 0 tuned / 3 base replicas); canary rolled back on errorRate: "
        "HTTP 5xx rate 10.0% (6/60) on the tuned arm")


def test_status_while_training_shows_the_eta_and_a_failed_job_its_reason():
    training = format_status(job(FineTuneJobStatus(phase="Training", progress=Progress(
        step=40, total_steps=150, loss=1.5, eval_loss=1.7, eta_seconds=30))))
    assert "training: step 40/150, loss 1.5, val 1.7, ETA 30s" in training.splitlines()
    failed = format_status(job(FineTuneJobStatus(phase="Failed", reason="TrainingFailed", message="exit code 1")))
    assert failed.splitlines() == ["team-a/support: Failed (TrainingFailed)", "  exit code 1"]


def pod(name: str, created: str, job_name: str, index: str | None = None) -> dict:
    annotations = {COMPLETION_INDEX: index} if index is not None else {}
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": {JOB_NAME_LABEL: job_name},
                         "annotations": annotations}}


def test_logs_pick_rank_zero_of_the_latest_attempt():
    pods = [
        pod("a0-0", "2026-01-01T00:00:00Z", "support-train-a0", "0"),
        pod("a1-1", "2026-01-01T00:05:02Z", "support-train-a1", "1"),
        pod("a1-0", "2026-01-01T00:05:00Z", "support-train-a1", "0"),
    ]
    picked = pick_pod(pods)
    assert picked is not None and picked["metadata"]["name"] == "a1-0"
    serve = [pod("serve-x", "2026-01-01T00:00:00Z", ""), pod("serve-y", "2026-01-01T00:01:00Z", "")]
    assert (pick_pod(serve) or {})["metadata"]["name"] == "serve-y"
    assert pick_pod([]) is None

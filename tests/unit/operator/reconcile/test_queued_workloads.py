"""Evaluation and serving that request accelerators wait for their own admission (DESIGN.md §6): the
job asks by naming the workload in status.queue, releases what it held in the same write, shows its place
while it waits, and stays within the phase's deadline; CPU-only ones start at once."""

from __future__ import annotations

import pytest

from finetune_api.contract.artifacts import ArtifactRef
from finetune_api.contract.summaries import EvaluateSummary, TrainSummary
from finetune_api.queue import PoolAdmission
from finetune_operator.reconcile import Apply, Create, DeleteServing, PatchStatus, Requeue, ServingState, decide
from finetune_operator.settings import OperatorSettings

from .conftest import NOW, children, ended, job, make_job, status_patch

pytestmark = pytest.mark.unit

T0 = "2030-01-01T11:00:00Z"
TRAINED = TrainSummary(step=10, total_steps=10, weights=ArtifactRef(path="model")).encode()
PASSED = EvaluateSummary(passed=True, score="exact_match 0.9", items=4).encode()
MERGED = {"mode": "merged", "gpus": 2, "replicas": 2}


def at(phase: str, queue: dict | None = None, **status) -> dict:
    return {"phase": phase, "phaseStartedAt": T0, "observedGeneration": 1, "attempts": {"count": 1},
            **({"queue": {"name": "default", **queue}} if queue else {}), **status}


def trained():
    return job("demo-train-a0", "succeeded", (ended(0, TRAINED),), started_at=T0, finished_at=T0)


def creates(actions) -> list:
    return [a for a in actions if isinstance(a, (Create, Apply))]


def test_a_gpu_evaluation_asks_for_admission_and_releases_the_training_quota_in_the_same_write(settings):
    held = {"admitted": True, "flavor": "a100", "resources": {"nvidia.com/gpu": "8"}}
    actions = decide(make_job(at("Training", held), serving=MERGED), children(trained()), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["phase"] == "Evaluating" and patch["reason"] == "WaitingForQuota"
    assert patch["queue"]["workload"] == "Evaluation" and patch["queue"]["admitted"] is False
    assert patch["queue"]["flavor"] is None  # nothing of the training's admission is kept while waiting
    assert "for the evaluation's accelerators" in patch["message"]


def test_a_waiting_evaluation_shows_its_place_and_starts_once_admitted(settings):
    waiting = {"workload": "Evaluation", "admitted": False, "position": 2,
               "message": "position 2 in FineTuneQueue default: waiting for quota: needs nvidia.com/gpu 2"}
    actions = decide(make_job(at("Evaluating", waiting), serving=MERGED), children(), NOW, settings)
    assert creates(actions) == []
    patch = status_patch(actions)
    assert patch["reason"] == "WaitingForQuota" and "position 2 in FineTuneQueue default" in patch["message"]
    admitted = {"workload": "Evaluation", "admitted": True, "flavor": "a100"}
    actions = decide(make_job(at("Evaluating", admitted), serving=MERGED), children(), NOW, settings)
    assert creates(actions) == [Create("eval")]
    condition = next(c for c in status_patch(actions)["conditions"] if c["type"] == "Admitted")
    assert condition["status"] == "True" and condition["message"] == "evaluation admitted to flavor a100"


def test_an_ended_evaluation_releases_and_a_gpu_serving_asks_next(settings):
    admitted = {"workload": "Evaluation", "admitted": True, "flavor": "a100"}
    done = job("demo-eval", "succeeded", (ended(0, PASSED),))
    patch = status_patch(decide(make_job(at("Evaluating", admitted), serving=MERGED), children(done), NOW, settings))
    assert patch["phase"] == "Deploying" and patch["reason"] == "WaitingForQuota"
    assert patch["queue"]["workload"] == "Serving" and patch["queue"]["admitted"] is False
    waiting = {"workload": "Serving", "admitted": False, "message": "position 1 in FineTuneQueue default: …"}
    missing = ServingState(message="missing")
    assert creates(decide(make_job(at("Deploying", waiting), serving=MERGED), children(serving=missing), NOW, settings)) == []
    admitted = {"workload": "Serving", "admitted": True, "flavor": "a100"}
    actions = decide(make_job(at("Deploying", admitted), serving=MERGED), children(serving=missing), NOW, settings)
    assert Apply("serving") in actions


def test_cpu_only_evaluation_and_serving_and_an_adapter_in_the_shared_pool_never_wait(settings):
    actions = decide(make_job(at("Training", {"admitted": True}), serving={"mode": "merged", "gpus": 0}),
                     children(trained()), NOW, settings)
    assert creates(actions) == [Create("eval")] and "workload" not in status_patch(actions)["queue"]
    done = job("demo-eval", "succeeded", (ended(0, PASSED),))
    for serving in ({"mode": "merged", "gpus": 0}, {"mode": "adapter", "gpus": 1}):
        actions = decide(make_job(at("Evaluating"), serving=serving), children(done), NOW, settings)
        assert Apply("serving") in actions, serving  # the pool is charged once, by its admin, never per adapter


def test_other_queue_modes_never_gate_evaluation_or_serving():
    for mode in ("kueue", "none"):
        actions = decide(make_job(at("Training", {"admitted": True}), serving=MERGED), children(trained()), NOW,
                         OperatorSettings(queue_mode=mode))
        assert creates(actions) == [Create("eval")], mode


def test_a_phase_that_waits_for_quota_fails_at_its_deadline_naming_the_queue(settings):
    waiting = {"workload": "Evaluation", "admitted": False, "message": "position 3 in FineTuneQueue default: waiting for quota"}
    late = make_job(at("Evaluating", waiting), serving=MERGED, deadlines={"evaluatingSeconds": 60})
    patch = status_patch(decide(late, children(), NOW, settings))
    assert patch["phase"] == "Failed" and patch["reason"] == "EvaluatingDeadlineExceeded"
    assert "never admitted: position 3 in FineTuneQueue default" in patch["message"]


def test_a_re_evaluation_asks_for_the_evaluations_admission(settings):
    serving = {"workload": "Serving", "admitted": True, "flavor": "a100"}
    old = {"evaluation": {}, "serving": MERGED}
    j = make_job(at("Serving", serving), generation=2, serving=MERGED, evaluation={"maxNewTokens": 8})
    actions = decide(j, children(config_spec=old), NOW, settings)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["phase"] == "Evaluating" and patch["queue"]["workload"] == "Evaluation"
    assert creates(actions) == [Apply("config")]


def test_a_re_evaluation_stops_the_replicas_that_held_serving_quota(settings):
    """Kept serving, the old replicas would run uncharged, or hold quota the evaluation may be waiting for."""
    old = {"evaluation": {}, "serving": MERGED}
    held = make_job(at("Serving", {"workload": "Serving", "admitted": True, "flavor": "a100"},
                       serving={"endpoint": "http://demo-serve:8000/v1"}),
                    generation=2, serving=MERGED, evaluation={"maxNewTokens": 8})
    actions = decide(held, children(config_spec=old), NOW, settings)
    assert DeleteServing() in actions
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["serving"] is None and "the endpoint stops until the new evaluation passes" in patch["message"]
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    cpu = {"mode": "merged", "gpus": 0}  # never charged: it keeps serving, as before
    kept = make_job(at("Serving"), generation=2, serving=cpu, evaluation={"maxNewTokens": 8})
    assert DeleteServing() not in decide(kept, children(config_spec={"evaluation": {}, "serving": cpu}), NOW, settings)


POOLED = {"mode": "adapter"}
WAITING_POOL = PoolAdmission(namespace="team", name="vllm-tiny", position=1,
                             message="position 1 in FineTuneQueue pools: waiting for quota: needs nvidia.com/gpu 2")


def test_an_adapter_deploys_only_once_its_pool_is_admitted(settings):
    done = job("demo-eval", "succeeded", (ended(0, PASSED),))
    actions = decide(make_job(at("Evaluating"), serving=POOLED), children(done, pool=WAITING_POOL), NOW, settings)
    assert creates(actions) == []  # no pool Deployment before its quota
    patch = status_patch(actions)
    assert patch["phase"] == "Deploying" and patch["reason"] == "WaitingForQuota"
    assert "adapter pool vllm-tiny waiting for quota: position 1 in FineTuneQueue pools" in patch["message"]
    missing = ServingState(message="missing")
    deploying = make_job(at("Deploying", message="gates passed"), serving=POOLED)
    actions = decide(deploying, children(serving=missing, pool=WAITING_POOL), NOW, settings)
    assert creates(actions) == [] and any(isinstance(a, Requeue) for a in actions)
    assert status_patch(actions)["message"].startswith("adapter pool vllm-tiny waiting for quota: position 1")
    admitted = WAITING_POOL.model_copy(update={"admitted": True, "position": None, "message": "admitted to flavor a100"})
    assert Apply("serving") in decide(deploying, children(serving=missing, pool=admitted), NOW, settings)
    actions = decide(make_job(at("Evaluating"), serving=POOLED), children(done, pool=admitted), NOW, settings)
    assert Apply("serving") in actions  # a pool already admitted for another adapter: at once


def test_an_adapter_whose_pool_is_never_admitted_fails_at_the_deploying_deadline(settings):
    late = make_job(at("Deploying"), serving=POOLED, deadlines={"deployingSeconds": 60})
    patch = status_patch(decide(late, children(serving=ServingState(message="missing"), pool=WAITING_POOL), NOW, settings))
    assert patch["phase"] == "Failed" and patch["reason"] == "DeployingDeadlineExceeded"
    assert "adapter pool vllm-tiny never admitted: position 1 in FineTuneQueue pools" in patch["message"]


def test_more_replicas_wait_for_the_difference_while_the_current_ones_keep_serving(settings):
    """MERGED asks 2 replicas × 2 GPUs; the job holds 2 (one replica, before the change)."""
    held = {"workload": "Serving", "admitted": True, "flavor": "a100", "resources": {"nvidia.com/gpu": "2", "cpu": "8",
                                                                                    "memory": "64Gi"}}
    j = make_job(at("Serving", held), generation=2, serving=MERGED)
    old = {"evaluation": j.spec.evaluation.to_api(), "serving": {**MERGED, "replicas": 1}}
    actions = decide(j, children(config_spec=old), NOW, settings)
    assert creates(actions) == [Apply("config")] and DeleteServing() not in actions
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["phase"] == "Deploying" and patch["reason"] == "WaitingForQuota"
    assert "for cpu 8, memory 64Gi, nvidia.com/gpu 2 more; the current replicas keep serving" in patch["message"]
    assert "queue" not in patch  # the admission is kept: the queue grows it in place
    growing = {**held, "position": 1, "message": "position 1 in FineTuneQueue default: waiting for quota to grow by …"}
    running = ServingState(ready=True, smoke_ok=True, endpoint="http://demo-serve:8000/v1")
    waiting = make_job(at("Deploying", growing, reason="WaitingForQuota"), serving=MERGED)
    actions = decide(waiting, children(serving=running), NOW, settings)
    assert creates(actions) == [] and status_patch(actions)["message"].startswith("serving waiting for quota to grow")
    grown = {**held, "resources": {"nvidia.com/gpu": "4", "cpu": "16", "memory": "128Gi"}}
    actions = decide(make_job(at("Deploying", grown, reason="WaitingForQuota"), serving=MERGED), children(serving=running),
                     NOW, settings)
    assert creates(actions) == [Apply("serving")] and status_patch(actions)["reason"] == "Deploying"
    fewer = make_job(at("Serving", grown), generation=2, serving={**MERGED, "replicas": 1})
    before = {"evaluation": fewer.spec.evaluation.to_api(), "serving": MERGED}
    assert Apply("serving") in decide(fewer, children(config_spec=before), NOW, settings)


def test_more_replicas_never_admitted_fail_at_the_deploying_deadline_naming_the_queue(settings):
    growing = {"workload": "Serving", "admitted": True, "flavor": "a100", "resources": {"nvidia.com/gpu": "2"},
               "message": "needs nvidia.com/gpu 8: more than flavor a100 of FineTuneQueue default provides"}
    late = make_job(at("Deploying", growing, reason="WaitingForQuota"), serving=MERGED, deadlines={"deployingSeconds": 60})
    patch = status_patch(decide(late, children(serving=ServingState(ready=True, smoke_ok=True)), NOW, settings))
    assert patch["phase"] == "Failed" and "more never admitted: needs nvidia.com/gpu 8: more than flavor a100" in patch["message"]

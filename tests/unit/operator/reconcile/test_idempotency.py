"""A whole happy path through `decide`, with the world reacting to each action: once a transition
is recorded, reconciling the same inputs again issues no writes."""

from __future__ import annotations

import pytest

from finetune_api.contract.summaries import EvaluateSummary, PrepareSummary, TrainSummary
from finetune_api.contract.termination import PhaseSummary
from finetune_api.job import DataReport

from finetune_operator.reconcile import Apply, Create, PatchStatus, ServingState, decide, writes

from .conftest import NOW, apply_patch, children, ended, job, make_job

pytestmark = pytest.mark.unit

NAMES = {"prepare": "demo-prepare", "eval": "demo-eval"}
SUMMARIES: dict[str, PhaseSummary] = {
    "demo-prepare": PrepareSummary(data=DataReport(train_examples=100)),
    "demo-train-a0": TrainSummary(step=10, train_loss=0.4),
    "demo-eval": EvaluateSummary(passed=True, score="exact_match 1.0", items=4),
}


@pytest.mark.parametrize("mode", ["adapter", "merged"])
def test_happy_path_is_idempotent_at_every_step(settings, mode):
    """Training, then the evaluation (it requests the serving replica's GPU) and, for a merged model,
    the serving replicas each wait for their own admission."""
    ftj = make_job(serving={"mode": mode})
    admissions = []
    jobs: dict = {}
    serving = None
    phases = []
    for _ in range(20):
        observed = children(*jobs.values(), serving=serving)
        actions = decide(ftj, observed, NOW, settings)
        for action in actions:
            if isinstance(action, Create) and action.child in ("prepare", "eval", "train"):
                name = NAMES.get(action.child) or f"demo-train-a{action.attempt}"
                jobs[name] = job(name, generation=1)
            if isinstance(action, Apply) and action.child == "serving":
                serving = ServingState(ready=False, message="0/1 ready")
            if isinstance(action, PatchStatus):
                ftj = apply_patch(ftj, action.patch)
        if not any(isinstance(a, PatchStatus) for a in actions):
            # the world moves: finish the running child
            running = [j for j in jobs.values() if j.outcome == "running"]
            if serving is not None and not serving.ready and serving.message != "missing":
                serving = ServingState(ready=True, ready_replicas=1, smoke_ok=True, endpoint="http://x:8000/v1")
                continue
            if not running:
                queue = ftj.status.queue
                if queue is not None and not queue.admitted and ftj.status.phase in ("Queued", "Evaluating", "Deploying"):
                    admissions.append(queue.workload or "Training")
                    ftj = apply_patch(ftj, {"queue": {"admitted": True}})
                    continue
                if ftj.status.phase == "Deploying" and serving is None:
                    serving = ServingState(message="missing")  # what the operator reads before any apply
                    continue
                break
            done = running[0]
            jobs[done.name] = job(done.name, "succeeded", (ended(0, SUMMARIES[done.name].encode()),), generation=1)
            continue
        if not phases or phases[-1] != ftj.status.phase:  # an admission is an in-phase write
            phases.append(ftj.status.phase)
        observed = children(*jobs.values(), serving=serving)
        again = decide(ftj, observed, NOW, settings)
        # what the world now shows may add an in-phase note; never a create or a transition
        for action in writes(again):
            assert isinstance(action, PatchStatus) and "phase" not in action.patch, action
            ftj = apply_patch(ftj, action.patch)
        third = decide(ftj, observed, NOW, settings)
        assert writes(third) == [], f"reconcile in {ftj.status.phase} wrote {writes(third)}"
    assert phases == ["Validating", "Queued", "Training", "Evaluating", "Deploying", "Serving"]
    assert admissions == ["Training", "Evaluation"] + (["Serving"] if mode == "merged" else [])
    assert ftj.status.observed_generation == 1
    assert {c.type: c.status for c in ftj.status.conditions} == {
        "Validated": "True", "Admitted": "True", "Trained": "True", "Evaluated": "True", "Deployed": "True",
        "Ready": "True"}

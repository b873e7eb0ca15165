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


def test_happy_path_is_idempotent_at_every_step(settings):
    ftj = make_job()
    jobs: dict = {}
    serving = None
    phases = []
    for _ in range(12):
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
            if serving is not None and not serving.ready:
                serving = ServingState(ready=True, ready_replicas=1, smoke_ok=True, endpoint="http://x:8000/v1")
                continue
            if not running:
                if ftj.status.phase == "Queued":
                    ftj = apply_patch(ftj, {"queue": {"admitted": True}})
                    continue
                break
            done = running[0]
            jobs[done.name] = job(done.name, "succeeded", (ended(0, SUMMARIES[done.name].encode()),), generation=1)
            continue
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
    assert ftj.status.observed_generation == 1
    assert {c.type: c.status for c in ftj.status.conditions} == {
        "Validated": "True", "Admitted": "True", "Trained": "True", "Evaluated": "True", "Deployed": "True",
        "Ready": "True"}

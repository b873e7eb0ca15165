"""The status a decision plans is typed: fields by their snake_case model names, checked when they are set,
and written as a camelCase JSON merge patch (a nested object merges, `None` removes a field)."""

from __future__ import annotations

import pydantic
import pytest

from finetune_api.job import Artifacts, FineTuneJobStatus, Progress
from finetune_operator.reconcile import PatchStatus
from finetune_operator.reconcile.decide import Plan
from finetune_operator.reconcile.status import revised
from finetune_operator.runtime.actuator import status_write

from .conftest import NOW, apply_patch, make_job

pytestmark = pytest.mark.unit

ADMITTED = {"phase": "Training", "queue": {"name": "gpus", "admitted": True, "flavor": "a100",
                                           "admittedAt": "2030-01-01T11:00:00Z"}}


def planned(plan: Plan) -> dict:
    [write] = [a for a in plan.result() if isinstance(a, PatchStatus)]
    return write.patch


@pytest.mark.parametrize("fields", [{"phse": "Failed"}, {"observedGeneration": 2}, {"gpuseconds": 1.0}])
def test_a_status_field_the_model_does_not_declare_raises_instead_of_being_dropped(fields):
    plan = Plan(make_job(ADMITTED), NOW)
    with pytest.raises(TypeError, match="FineTuneJobStatus has no field"):
        plan.set(**fields)
    assert plan.patch == {}


@pytest.mark.parametrize("section, fields, error", [
    ("queue", {"admited": False}, "QueueStatus has no field admited"),
    ("queue", {"evictionRequested": False}, "QueueStatus has no field evictionRequested"),
    ("attempts", {"lastfailure": "x"}, "Attempts has no field lastfailure"),
    ("queues", {"admitted": False}, "no nested status object 'queues'"),
    ("phase", {"admitted": False}, "no nested status object 'phase'"),
])
def test_a_partial_update_with_an_unknown_name_raises(section, fields, error):
    plan = Plan(make_job(ADMITTED), NOW)
    with pytest.raises(TypeError, match=error):
        plan.update(section, **fields)
    assert plan.patch == {}


def test_a_value_the_model_cannot_hold_raises_when_it_is_set():
    plan = Plan(make_job(ADMITTED), NOW)
    with pytest.raises(pydantic.ValidationError, match="phase"):
        plan.set(phase="Done")
    with pytest.raises(pydantic.ValidationError, match="admitted"):
        plan.update("queue", admitted=None)  # not optional: None (remove) is refused too
    with pytest.raises(pydantic.ValidationError, match="count"):
        plan.update("attempts", count="two")
    with pytest.raises(pydantic.ValidationError, match="progress"):
        plan.set(progress=Artifacts(root="s3://b/x"))


def test_a_nested_object_is_set_as_its_model_and_a_hand_built_dict_is_refused():
    plan = Plan(make_job(ADMITTED), NOW)
    with pytest.raises(TypeError, match="queue: pass the status model, or plan.update"):
        plan.set(queue={"admitted": False})
    plan.set(progress=Progress(step=3, total_steps=10, summary="3/10"))
    assert planned(plan) == {"progress": Progress(step=3, total_steps=10, summary="3/10").to_api()}


def test_partial_updates_write_a_camelcase_merge_patch_that_keeps_the_rest_and_removes_what_is_none():
    job = make_job(ADMITTED)
    plan = Plan(job, NOW)
    plan.update("queue", admitted=False, eviction_requested=False)
    plan.update("queue", flavor=None, admitted_at=None)
    plan.set(phase="Queued", observed_generation=1, serving=None)
    patch = planned(plan)
    assert patch == {"queue": {"admitted": False, "evictionRequested": False, "flavor": None, "admittedAt": None},
                     "phase": "Queued", "observedGeneration": 1, "serving": None}
    stored = apply_patch(job, patch).status
    assert stored.queue is not None and (stored.queue.name, stored.queue.admitted) == ("gpus", False)
    assert (stored.queue.flavor, stored.queue.admitted_at) == (None, None)
    assert status_write(job.status, patch) == {"phase": "Queued", "observedGeneration": 1, "queue": {
        "admitted": False, "flavor": None, "admittedAt": None}}, "the actuator sends only what changes"


def test_conditions_are_planned_through_the_condition_model():
    plan = Plan(make_job(ADMITTED), NOW)
    plan.condition("Admitted", False, "Preempted", "evicted")
    [condition] = planned(plan)["conditions"]
    assert condition == {"type": "Admitted", "status": "False", "reason": "Preempted", "message": "evicted",
                         "lastTransitionTime": "2030-01-01T12:00:00Z", "observedGeneration": 1}
    assert FineTuneJobStatus.model_validate(planned(plan)).conditions[0].reason == "Preempted"


def test_a_revised_status_model_refuses_a_misspelt_name():
    assert revised(Artifacts(root="r"), adapter="r/adapter").adapter == "r/adapter"
    with pytest.raises(TypeError, match="Artifacts has no field adaptor"):
        revised(Artifacts(root="r"), adaptor="r/adapter")

"""Job status is written through `FineTuneJobStatus`: the write is what the model dumps, and a patch the
model cannot hold fails before any API call."""

import pydantic
import pytest

from finetune_api.job import FineTuneJobStatus
from finetune_operator import merge_patch
from finetune_operator.reconcile import PatchStatus, decide
from finetune_operator.runtime.actuator import status_write
from finetune_operator.settings import OperatorSettings

from ..reconcile.conftest import NOW, children, make_job

pytestmark = pytest.mark.unit


def test_the_first_transition_writes_the_models_dump():
    job = make_job()
    actions = decide(job, children(), NOW, OperatorSettings(queue_mode="embedded"))
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    write = status_write(job.status, patch)
    assert write == FineTuneJobStatus.model_validate(patch).to_api()
    assert write["phase"] == "Validating" and write["attempts"] == {
        "count": 0, "infrastructureFailures": 0, "preemptions": 0, "lastFailure": ""}


def test_a_later_write_sends_only_what_changed_and_removes_what_the_patch_nulls():
    job = make_job(status={"phase": "Serving", "serving": {"endpoint": "http://x", "readyReplicas": 1},
                           "queue": {"name": "q", "admitted": True, "flavor": "a100"}})
    write = status_write(job.status, {"phase": "Succeeded", "serving": None, "queue": {"admitted": False, "flavor": None}})
    assert write == {"phase": "Succeeded", "serving": None, "queue": {"admitted": False, "flavor": None}}
    stored = merge_patch.apply(job.status.to_api(), write)
    assert "serving" not in stored and "flavor" not in stored["queue"]
    assert stored["queue"]["name"] == "q" and stored["queue"]["admitted"] is False


def test_a_field_the_model_does_not_declare_is_not_written():
    job = make_job(status={"phase": "Training"})
    assert status_write(job.status, {"progres": {"step": 3}}) == {}


def test_a_value_of_the_wrong_type_fails_before_the_api_call():
    job = make_job(status={"phase": "Training"})
    with pytest.raises(pydantic.ValidationError, match="progress.step"):
        status_write(job.status, {"progress": {"step": "three"}})

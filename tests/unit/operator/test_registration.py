"""What the operator registers with Kopf: one index per watched resource, each read by the runtime."""

import dataclasses

import kopf
import pytest

import finetune_operator.main  # noqa: F401 - registers the handlers on Kopf's default registry
from finetune_operator.handlers.job import register_kueue
from finetune_operator.runtime.indexes import Indexes

pytestmark = pytest.mark.unit


def test_one_index_per_resource_and_the_runtime_reads_every_one():
    registry = kopf.get_default_registry()
    handlers = list(registry._indexing.get_all_handlers())  # private: Kopf has no public listing
    kueue = kopf.OperatorRegistry()
    register_kueue(kueue)
    handlers += list(kueue._indexing.get_all_handlers())
    resources = [(h.selector.group, h.selector.any_name) for h in handlers]
    assert len(resources) == len(set(resources)) == 6, resources
    live = Indexes.from_kwargs({h.id: {"marker": [h.id]} for h in handlers})
    read = {next(iter(getattr(live, f.name)["marker"])) for f in dataclasses.fields(Indexes)}
    assert read == {h.id for h in handlers}


def test_a_job_that_ends_its_training_leaves_the_queue_index():
    """Kopf keeps an object's previous entry when its index function returns None; the queue's index
    returns `{}` instead, so a job whose training ended no longer holds quota as its last snapshot said."""
    from finetune_operator.handlers.indexes import queued_jobs

    def body(phase: str, admitted: bool) -> kopf.Body:
        return kopf.Body({"metadata": {"name": "a", "namespace": "team", "resourceVersion": "7"},
                          "spec": {"queue": {"name": "gpus"}, "resources": {"gpusPerNode": 1}},
                          "status": {"phase": phase, "queue": {"admitted": admitted}}})

    assert set(queued_jobs(body=body("Training", True))) == {"gpus"}
    assert queued_jobs(body=body("Evaluating", False)) == {}

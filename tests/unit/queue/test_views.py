"""Reading FineTuneQueue and FineTuneJob objects (as the API server returns them) into cycle inputs."""

import pytest

from finetune_api.common import LabelSelector
from finetune_operator.queue.selector import selector_matches
from finetune_operator.queue.views import admitted_flavor, job_snapshot, job_view, queue_view

pytestmark = pytest.mark.unit

QUEUE = {
    "metadata": {"name": "gpus"},
    "spec": {
        "flavors": [{"name": "a100", "nodeLabels": {"gpu": "a100"}, "resources": [{"name": "nvidia.com/gpu", "nominal": "16"}, {"name": "memory", "nominal": "2Ti"}]}],
        "strategy": "StrictFIFO",
        "priorityClasses": [{"name": "high", "value": 100}],
        "preemption": {"withinQueue": "LowerPriority", "gracePeriodSeconds": 30},
    },
}


def test_queue_view_reads_quota_priorities_and_preemption() -> None:
    view = queue_view(QUEUE)
    assert view.flavors[0].nominal == {"nvidia.com/gpu": 16000, "memory": 2 * 2**40 * 1000}
    assert (view.strategy, dict(view.priorities), view.preempt_lower_priority, view.grace_period_seconds) == (
        "StrictFIFO", {"high": 100}, True, 30)


def test_job_view_reads_requests_from_spec_and_admission_from_status() -> None:
    obj = {
        "metadata": {"name": "tune", "namespace": "ml", "creationTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {"queue": {"name": "gpus", "priorityClass": "high"}, "resources": {"nodes": 2, "gpusPerNode": 8}},
        "status": {"phase": "Training", "progress": {"etaSeconds": 42},
                   "queue": {"admitted": True, "flavor": "a100", "resources": {"nvidia.com/gpu": "16"}, "evictionRequested": True}},
    }
    view = job_view(obj)
    assert (view.key, view.queue, view.priority_class, view.phase) == ("ml/tune", "gpus", "high", "Training")
    assert view.requests["nvidia.com/gpu"] == 16000 and view.held == {"nvidia.com/gpu": 16000}
    assert view.holds_quota and view.eviction_requested and view.eta_seconds == 42
    assert view.created == 1767323045.0


def test_a_job_without_queue_or_status_waits_in_the_default_queue() -> None:
    view = job_view({"metadata": {"name": "j", "namespace": "ns"}, "spec": {}})
    assert (view.queue, view.phase, view.admitted, view.holds_quota) == ("default", "Pending", False, False)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {}, True),
        (LabelSelector(), {"a": "b"}, True),
        (LabelSelector(match_labels={"team": "a"}), {"team": "a"}, True),
        (LabelSelector(match_labels={"team": "a"}), {"team": "b"}, False),
        (LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "In", "values": ["x"]}]}), {"t": "x"}, True),
        (LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["x"]}]}), {"t": "x"}, False),
        (LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "Exists"}]}), {}, False),
        (LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}), {}, True),
    ],
)
def test_namespace_selectors_match_as_in_kubernetes(selector, labels, matches) -> None:
    assert selector_matches(selector, labels) is matches


def test_the_queue_index_holds_waiting_and_admitted_jobs_only() -> None:
    def obj(phase: str, admitted: bool = False) -> dict:
        return {"metadata": {"name": "a", "namespace": "team", "resourceVersion": "7", "uid": "u"},
                "spec": {"queue": {"name": "gpus"}, "resources": {"gpusPerNode": 4}, "model": {"uri": "pvc://m"}},
                "status": {"phase": phase, "queue": {"admitted": admitted}, "progress": {"etaSeconds": 60, "step": 3}}}

    queue, snapshot = job_snapshot(obj("Queued"))
    assert queue == "gpus" and "model" not in snapshot["spec"] and snapshot["status"]["progress"] == {"etaSeconds": 60}
    assert job_view(snapshot).requests == job_view(obj("Queued")).requests
    assert job_snapshot(obj("Evaluating")) is None
    assert job_snapshot(obj("Evaluating", admitted=True)) is not None, "still holds quota until un-admitted"


def test_the_admitted_flavor_is_read_from_the_queue() -> None:
    assert admitted_flavor(QUEUE, "a100").node_labels == {"gpu": "a100"}
    assert admitted_flavor(QUEUE, "h100") is None and admitted_flavor(None, "a100") is None

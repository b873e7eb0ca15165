"""What the embedded queue writes, built as the API's status models and sent as merge patches."""

import pytest

from finetune_api.queue import FineTuneQueueStatus
from finetune_operator import merge_patch
from finetune_operator.queue.admission import JobDecision, QueueSummary
from finetune_operator.queue.status import job_queue_status, queue_status

pytestmark = pytest.mark.unit

NOW = "2030-01-01T12:00:00Z"
ADMITTED = {"name": "gpus", "admitted": True, "admittedAt": "2030-01-01T11:00:00Z", "flavor": "a100",
            "resources": {"nvidia.com/gpu": "4"}, "message": "admitted", "evictionRequested": False}


def test_admission_records_flavor_quota_and_time():
    decision = JobDecision("team/a", "gpus", admitted=True, flavor="a100", resources={"nvidia.com/gpu": 4000},
                           message="admitted", newly_admitted=True)
    written = job_queue_status(decision, {"name": "gpus", "position": 1}, NOW).to_api()
    assert written == {"name": "gpus", "admitted": True, "admittedAt": NOW, "flavor": "a100",
                       "resources": {"nvidia.com/gpu": "4"}, "message": "admitted", "evictionRequested": False}


def test_a_later_cycle_keeps_the_admission_time_and_writes_nothing():
    decision = JobDecision("team/a", "gpus", admitted=True, flavor="a100", resources={"nvidia.com/gpu": 4000},
                           message="admitted")
    assert merge_patch.diff(ADMITTED, job_queue_status(decision, ADMITTED, NOW).to_api()) == {}


def test_leaving_the_queue_removes_flavor_time_and_held_quota():
    decision = JobDecision("team/a", "gpus", admitted=False, position=2, message="waiting")
    patch = merge_patch.diff(ADMITTED, job_queue_status(decision, ADMITTED, NOW).to_api())
    assert patch == {"admitted": False, "admittedAt": None, "flavor": None, "resources": {"nvidia.com/gpu": None},
                     "position": 2, "message": "waiting"}


def test_queue_status_sums_usage_per_resource_for_kubectl_get():
    summary = QueueSummary("gpus", nominal={"a100": {"nvidia.com/gpu": 8000}, "h100": {"nvidia.com/gpu": 8000}},
                           usage={"a100": {"nvidia.com/gpu": 8000}}, admitted=2, pending=1)
    status = queue_status(summary)
    assert isinstance(status, FineTuneQueueStatus)
    api = status.to_api()
    assert api["usage"][0] == {"flavor": "a100", "resource": "nvidia.com/gpu", "used": "8", "nominal": "8"}
    assert (api["admitted"], api["pending"], api["usageSummary"]) == (2, 1, "nvidia.com/gpu 8/16")

"""Reconcile errors: the one classification (transient or permanent), what the user sees, and 409 ownership."""

from __future__ import annotations

import copy

import pytest
import urllib3

from finetune_operator import builders
from finetune_operator.k8s import K8sError, NotPermitted
from finetune_operator.queue.views import job_view
from finetune_operator.reconcile import Emit, Observe, writes
from finetune_operator.reconcile.decide import reconcile_failed, reconcile_recovered
from finetune_operator.reconcile.failures import ForeignObject, NotYetCollected, ReconcileFailure, classify, ownership

from .conftest import NOW, apply_patch, make_job, status_patch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408, 0])
def test_server_errors_rate_limits_and_timeouts_are_transient(status):
    failure = classify(K8sError(status, "Internal Server Error", '{"kind":"Status","message":"etcd leader changed"}'))
    assert failure.error_class == "transient" and failure.reason == "ApiError"
    assert failure.message.startswith(f"API error {status} ")


@pytest.mark.parametrize("error", [
    TimeoutError("timed out"),
    ConnectionResetError("reset by peer"),
    urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/x/configmaps", "connection refused"),
    urllib3.exceptions.ProtocolError("Connection aborted."),
])
def test_an_unreachable_api_server_is_transient(error):
    failure = classify(error)
    assert (failure.error_class, failure.reason) == ("transient", "ApiUnreachable")
    assert type(error).__name__ in failure.message


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 422])
def test_client_errors_other_than_409_and_429_are_permanent(status):
    body = '{"kind":"Status","message":"ConfigMap \\"x-config\\" is invalid: []: Too long: must have at most 1048576 bytes"}'
    failure = classify(K8sError(status, "Unprocessable Entity", body))
    assert failure.error_class == "permanent"
    assert failure.message == (f'API error {status} Unprocessable Entity: ConfigMap "x-config" is invalid: []: Too long: '
                               'must have at most 1048576 bytes'), "the Status message, not the raw body"


def test_builder_errors_and_missing_permissions_are_permanent_with_their_message():
    failure = classify(ValueError("resources.cpu: '1.2.3' is not a quantity"))
    assert failure == ReconcileFailure("permanent", "ReconcileError", "ValueError: resources.cpu: '1.2.3' is not a quantity")
    assert classify(NotPermitted("create core/secrets is not in rbac.REQUIRED_RULES")).reason == "NotPermitted"


def test_a_foreign_object_is_permanent_and_a_previous_jobs_object_is_transient():
    assert classify(ForeignObject("ConfigMap team/demo-config already exists")).error_class == "permanent"
    assert classify(NotYetCollected("ConfigMap team/demo-config is being deleted")).error_class == "transient"


def test_messages_are_one_line_and_bounded():
    failure = classify(K8sError(500, "Internal Server Error", "line one\nline two " + "x" * 2000))
    assert "\n" not in failure.message and len(failure.message) <= 300


# -- what the user sees -------------------------------------------------------------------------------

def at(phase: str, **status):
    return make_job({"phase": phase, "phaseStartedAt": "2030-01-01T11:59:00Z", "observedGeneration": 1, **status})


TRANSIENT = ReconcileFailure("transient", "ApiError", "API error 503 Service Unavailable: etcd timeout")
PERMANENT = ReconcileFailure("permanent", "ReconcileError", "ValueError: resources.cpu: '1.2.3' is not a quantity")


def test_a_transient_error_is_a_condition_only_and_never_fails_the_job(settings):
    for failures in (1, 50, 500):
        actions = reconcile_failed(at("Validating"), TRANSIENT, failures, NOW, settings)
        patch = status_patch(actions)
        assert "phase" not in patch and not [a for a in actions if isinstance(a, Emit)]
        cond = next(c for c in patch["conditions"] if c["type"] == "Reconciled")
        assert (cond["status"], cond["reason"]) == ("False", "ApiError")
        assert cond["message"] == "API error 503 Service Unavailable: etcd timeout; retrying with backoff"


def test_the_same_transient_error_again_writes_nothing(settings):
    job = at("Validating")
    job = apply_patch(job, status_patch(reconcile_failed(job, TRANSIENT, 1, NOW, settings)))
    assert reconcile_failed(job, TRANSIENT, 2, NOW, settings) == [
        Observe("reconcile_error", 1, {"class": "transient", "reason": "ApiError"})], "counted, not written"


def test_a_permanent_error_is_a_condition_and_a_warning_event_at_once(settings):
    actions = reconcile_failed(at("Validating"), PERMANENT, 1, NOW, settings)
    patch = status_patch(actions)
    assert "phase" not in patch
    cond = next(c for c in patch["conditions"] if c["type"] == "Reconciled")
    assert cond["message"] == (f"{PERMANENT.message} (the job fails if this persists for "
                               f"{settings.reconcile_error_attempts} attempts)")
    assert [a for a in actions if isinstance(a, Emit)] == [Emit("Warning", "ReconcileError", PERMANENT.message)]
    recorded = apply_patch(at("Validating"), patch)
    assert writes(reconcile_failed(recorded, PERMANENT, 2, NOW, settings)) == [], \
        "one write and one Event per error, not one per retry (a status write would reconcile again at once)"


def test_a_permanent_error_fails_the_job_after_the_budget_and_releases_its_admission(settings):
    job = at("Queued", queue={"name": "default", "admitted": True, "flavor": "a100"})
    actions = reconcile_failed(job, PERMANENT, settings.reconcile_error_attempts, NOW, settings)
    patch = status_patch(actions)
    assert (patch["phase"], patch["reason"], patch["message"]) == ("Failed", "ReconcileError", PERMANENT.message)
    assert patch["queue"] == {"admitted": False, "evictionRequested": False}
    assert patch["completionTime"] == "2030-01-01T12:00:00Z"
    assert [a for a in actions if isinstance(a, Emit)] == [Emit("Warning", "ReconcileError", PERMANENT.message)]
    before, after = job_view(job.to_api()), job_view(apply_patch(job, patch).to_api())
    assert before.holds_quota and not after.holds_quota, "the queue gives the quota to the next job"


def test_a_terminal_job_records_no_reconcile_errors(settings):
    assert reconcile_failed(at("Failed"), PERMANENT, 9, NOW, settings) == []


def test_recovery_clears_the_condition_once(settings):
    job = at("Validating")
    job = apply_patch(job, status_patch(reconcile_failed(job, TRANSIENT, 1, NOW, settings)))
    patch = status_patch(reconcile_recovered(job, NOW))
    cond = next(c for c in patch["conditions"] if c["type"] == "Reconciled")
    assert (cond["status"], cond["reason"]) == ("True", "Reconciled")
    assert reconcile_recovered(apply_patch(job, patch), NOW) == []
    assert reconcile_recovered(at("Validating"), NOW) == [], "a job that never failed gets no condition"


# -- 409: whose object is it ----------------------------------------------------------------------------

def stored(obj: dict, **meta) -> dict:
    """`obj` as the API server returns it, with `meta` fields replaced."""
    out = copy.deepcopy(obj)
    out["metadata"].update(meta)
    return out


def test_our_own_object_is_ours(settings):
    wanted = builders.build_config_map(make_job(), settings)
    assert ownership(stored(wanted, resourceVersion="7"), wanted)[0] == "ours"


def test_an_object_owned_by_nobody_is_foreign_and_named(settings):
    wanted = builders.build_config_map(make_job(), settings)
    verdict, message = ownership(stored(wanted, ownerReferences=[]), wanted)
    assert verdict == "foreign"
    assert message.startswith("ConfigMap team/demo-config already exists and is not this job's (controlled by nobody)")


def test_an_object_controlled_by_something_else_is_foreign(settings):
    wanted = builders.build_config_map(make_job(), settings)
    other = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-9", "controller": True}]
    verdict, message = ownership(stored(wanted, ownerReferences=other), wanted)
    assert verdict == "foreign" and "controlled by Deployment web (uid u-9)" in message


def test_the_children_of_a_deleted_job_of_the_same_name_are_waited_for_not_adopted(settings):
    old = builders.build_config_map(make_job(), settings)
    new_job = make_job()
    new_job.metadata.uid = "u-2"
    wanted = builders.build_config_map(new_job, settings)
    verdict, message = ownership(old, wanted)
    assert verdict == "previous" and "uid u-1" in message and "garbage collector" in message
    assert ownership(stored(old, ownerReferences=[], deletionTimestamp="2030-01-01T12:00:00Z"), wanted)[0] == "previous"


def test_the_shared_adapter_pool_is_ours_only_when_it_is_a_pool_that_no_one_controls(settings):
    pool = builders.build_serving_objects(make_job(), settings)[0]
    assert pool["metadata"]["name"] == "vllm-tiny" and not any(
        o.get("controller") for o in pool["metadata"].get("ownerReferences") or [])
    peer = [{"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "name": "peer", "uid": "u-7",
             "controller": False}]
    assert ownership(stored(pool, ownerReferences=peer), pool)[0] == "ours"
    unlabelled = stored(pool, labels={"app": "vllm"})
    assert ownership(unlabelled, pool)[0] == "foreign"
    controlled = stored(pool, ownerReferences=[{**peer[0], "controller": True}])
    assert ownership(controlled, pool)[0] == "foreign"

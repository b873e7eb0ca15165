"""The adapter pool's plan: every ready replica ends up listing exactly the pool's adapters, under
`<job>@<generation>` and `<job>`, before its readiness gate lets traffic in."""

from __future__ import annotations

import datetime as dt

import pytest

from finetune_operator.reconcile.pool import (ADAPTERS_GATE, LoadAdapter, PoolAdapter, Replica, SetGate, UnloadAdapter,
                                              plan_pool, plan_replica, replica_of, serving_everywhere)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
ALPHA = PoolAdapter("alpha", 2, "/mnt/pvc/a/alpha/adapter")
BETA = PoolAdapter("beta", 1, "/mnt/pvc/a/beta/adapter")


def replica(pod: str = "vllm-0", loaded: set[str] | None = None, gate_at: dt.datetime | None = None,
            ready: bool = True) -> Replica:
    return Replica(pod=pod, url=f"http://{pod}:8000", container_ready=ready, started_at=T0,
                   gate=gate_at is not None, gate_since=gate_at, loaded=frozenset(loaded) if loaded is not None else None)


def test_a_new_replica_gets_every_adapter_then_its_gate():
    actions = plan_replica([BETA, ALPHA], replica(loaded=set()))
    assert actions == [
        LoadAdapter("vllm-0", "http://vllm-0:8000", "alpha@2", ALPHA.path),
        LoadAdapter("vllm-0", "http://vllm-0:8000", "alpha", ALPHA.path),
        LoadAdapter("vllm-0", "http://vllm-0:8000", "beta@1", BETA.path),
        LoadAdapter("vllm-0", "http://vllm-0:8000", "beta", BETA.path),
        SetGate("vllm-0", True, "2 adapter(s) loaded"),
    ]


def test_a_converged_replica_needs_nothing():
    assert plan_replica([ALPHA, BETA], replica(loaded={"alpha@2", "alpha", "beta@1", "beta"}, gate_at=T0)) == []


def test_a_joining_adapter_is_loaded_into_the_running_replica_without_touching_the_others():
    actions = plan_replica([ALPHA, BETA], replica(loaded={"alpha@2", "alpha"}, gate_at=T0))
    assert [(type(a).__name__, getattr(a, "name", None)) for a in actions] == [("LoadAdapter", "beta@1"),
                                                                              ("LoadAdapter", "beta")]


def test_a_deleted_jobs_adapter_and_an_older_generation_are_unloaded():
    actions = plan_replica([ALPHA], replica(loaded={"alpha@1", "alpha", "gone@3", "gone"}, gate_at=T0))
    unloaded = [a.name for a in actions if isinstance(a, UnloadAdapter)]
    loaded = [a.name for a in actions if isinstance(a, LoadAdapter)]
    # the alias `alpha` may point at generation 1: it is reloaded with the versioned name
    assert unloaded == ["alpha", "alpha@1", "gone", "gone@3"] and loaded == ["alpha@2", "alpha"]


def test_a_restarted_container_loses_its_gate_until_it_is_loaded_again():
    restarted = Replica(pod="vllm-0", url="http://vllm-0:8000", container_ready=False, started_at=T0,
                        gate=True, gate_since=T0 - dt.timedelta(minutes=5))
    assert plan_replica([ALPHA], restarted) == [SetGate("vllm-0", False, plan_replica([ALPHA], restarted)[0].message)]
    # ready again: a gate set before this container started does not count
    stale = replica(loaded=set(), gate_at=T0 - dt.timedelta(minutes=5))
    assert not stale.gate_current
    assert plan_replica([ALPHA], stale)[-1] == SetGate("vllm-0", True, "1 adapter(s) loaded")


def test_an_unread_replica_is_left_alone():
    assert plan_replica([ALPHA], replica(loaded=None)) == []


def test_serving_means_listed_by_every_ready_replica():
    full = replica("vllm-0", {"alpha@2", "alpha"}, gate_at=T0)
    partial = replica("vllm-1", {"alpha@2"}, gate_at=T0)
    starting = replica("vllm-2", set(), ready=False)
    assert serving_everywhere(ALPHA, [full, starting]) == (True, "alpha@2 listed by 1 ready replica(s)")
    assert serving_everywhere(ALPHA, [full, partial]) == (False, "alpha@2 not yet listed by vllm-1")
    assert serving_everywhere(ALPHA, [starting])[0] is False
    assert [a.pod for a in plan_pool([ALPHA], [partial, full]) if isinstance(a, LoadAdapter)] == ["vllm-1"]


def test_replica_of_reads_the_pod_as_the_kubelet_and_the_operator_wrote_it():
    pod = {
        "metadata": {"name": "vllm-tiny-abc"},
        "status": {
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "False"},
                           {"type": ADAPTERS_GATE, "status": "True", "lastTransitionTime": "2026-12-05T12:00:05Z"}],
            "containerStatuses": [{"name": "vllm", "ready": True,
                                   "state": {"running": {"startedAt": "2026-12-05T12:00:00Z"}}}],
        },
    }
    got = replica_of(pod, "vllm", 8000)
    assert got == Replica("vllm-tiny-abc", "http://10.0.0.7:8000", True, T0, True, T0 + dt.timedelta(seconds=5))
    assert got is not None and got.gate_current
    assert replica_of({**pod, "metadata": {"name": "x", "deletionTimestamp": "2026-12-05T12:01:00Z"}}, "vllm", 8000) is None

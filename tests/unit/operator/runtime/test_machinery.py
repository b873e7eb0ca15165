"""The controller runtime's small parts: the job cache, timers, backoff, expectations and the indexes."""

import asyncio

import pytest

from finetune_operator.reconcile import JobState, PodState
from finetune_operator.runtime.expectations import (
    CREATE_EXPECTATION_SECONDS,
    CreateExpectations,
    WrittenQueueStatus,
)
from finetune_operator.runtime.indexes import Indexes
from finetune_operator.runtime.job_cache import JobCache
from finetune_operator.runtime.timers import ERROR_BACKOFF_MAX, Backoff, Timers

pytestmark = pytest.mark.unit


def body(rv: str, uid: str = "u1", phase: str = "Training") -> dict:
    return {"metadata": {"namespace": "team", "name": "demo", "uid": uid, "resourceVersion": rv},
            "status": {"phase": phase}}


def test_the_cache_keeps_the_newest_version_of_an_object():
    cache = JobCache()
    cache.seen(body("5"))
    cache.stored(("team", "demo"), body("9", phase="Evaluating"))
    cache.seen(body("7"))  # a late watch event older than our own write
    assert cache.get(("team", "demo"))["status"]["phase"] == "Evaluating"
    cache.seen(body("2", uid="u2", phase="Pending"))  # same name, new object
    assert cache.phases() == ["Pending"]
    cache.forget(("team", "demo"))
    assert ("team", "demo") not in cache and len(cache) == 0


def test_the_earliest_timer_wins_and_fires_once():
    fired: list[tuple[str, float]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def fire(key):
            fired.append((key, loop.time() - start))

        timers = Timers(fire)
        timers.request("a", 0.3)
        timers.request("a", 0.05)
        timers.request("a", 0.2)
        timers.request("b", 0.05)
        timers.forget("b")
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert [k for k, _ in fired] == ["a"] and fired[0][1] < 0.2


def test_backoff_doubles_up_to_its_cap_and_a_success_resets_it():
    backoff = Backoff()
    delays = [backoff.failed("k") for _ in range(8)]
    assert delays[:3] == [2.0, 4.0, 8.0] and delays[-1] == ERROR_BACKOFF_MAX
    assert backoff.failures("k") == 8
    backoff.forget("k")
    assert backoff.failed("k") == 2.0 and backoff.failures("k") == 1


def test_a_fresh_creation_is_not_repeated_until_the_expectation_lapses():
    now = [100.0]
    expectations = CreateExpectations(clock=lambda: now[0])
    ident = ("Job", "team", "demo-prepare", "u-1")
    assert not expectations.pending(ident)
    expectations.created(ident)
    assert expectations.pending(ident)
    assert not expectations.pending(("Job", "team", "demo-prepare", "u-2")), "a re-created job is another owner"
    now[0] += CREATE_EXPECTATION_SECONDS
    assert not expectations.pending(ident)
    expectations.created(ident)
    expectations.deleted(ident)  # a re-evaluation deletes the evaluation Job and creates it again at once
    assert not expectations.pending(ident)


def test_the_queue_index_lists_the_pools_that_serve_a_job_now_with_their_oldest_job():
    from finetune_operator.handlers.indexes import queued_jobs

    def adapter(name: str, created: str, phase: str) -> dict:
        return {"metadata": {"name": name, "namespace": "team", "creationTimestamp": created},
                "spec": {"model": {"uri": "pvc://models/tiny"}, "datasets": {"train": {"uri": "pvc://data/t.jsonl"}},
                         "serving": {"mode": "adapter"}},
                "status": {"phase": phase}}

    entries = [queued_jobs(body=adapter("a", "2030-01-01T10:00:00Z", "Serving")),
               queued_jobs(body=adapter("b", "2030-01-01T09:00:00Z", "Deploying")),
               queued_jobs(body=adapter("c", "2030-01-01T08:00:00Z", "Evaluating"))]
    assert entries[2] == {}
    index: dict = {}
    for entry in entries:
        for key, value in entry.items():
            index.setdefault(key, []).append(value)
    assert Indexes(queued_jobs=index).wanted_pools() == {("team", "vllm-tiny"): 1893488400.0}  # b, at 09:00


def test_the_queue_reads_its_own_write_until_the_index_moves_on():
    written = WrittenQueueStatus()
    snapshot = {"metadata": {"namespace": "team", "name": "a", "resourceVersion": "4"},
                "status": {"phase": "Queued", "queue": {"admitted": False, "position": 1}}}
    written.wrote("team/a", "4", {"admitted": True, "flavor": "a100"})
    assert written.view(snapshot)["status"]["queue"] == {"admitted": True, "flavor": "a100"}
    moved = {**snapshot, "metadata": {**snapshot["metadata"], "resourceVersion": "5"}}
    assert written.view(moved) == moved
    assert written.view(snapshot) == snapshot, "once the index moved, the write is forgotten"


def test_children_come_with_their_pods_in_name_order():
    indexes = Indexes.from_kwargs({
        "ft_child_jobs": {("team", "demo"): [JobState(name="demo-prepare", uid="j-1", owner_uid="u-1")]},
        "ft_child_pods": {("team", "demo-prepare"): [PodState(name="p-b", owner_uid="j-1"),
                                                     PodState(name="p-a", owner_uid="j-1")]},
        "unrelated": {},
    })
    [prepare] = indexes.children("team", "demo", "u-1")
    assert [p.name for p in prepare.pods] == ["p-a", "p-b"]
    assert indexes.children("team", "other", "u-1") == [] and indexes.queue("gpus") is None


def test_children_are_matched_by_controller_uid_not_by_labels_alone():
    """A job deleted and re-created under the same name: the old Job (and the old pods of a Job of the
    same name) still carry the label, but not the new job's uid."""
    indexes = Indexes.from_kwargs({
        "ft_child_jobs": {("team", "demo"): [JobState(name="demo-prepare", uid="j-old", owner_uid="u-old"),
                                             JobState(name="demo-prepare", uid="j-new", owner_uid="u-new")]},
        "ft_child_pods": {("team", "demo-prepare"): [PodState(name="p-old", owner_uid="j-old"),
                                                     PodState(name="p-new", owner_uid="j-new")]},
    })
    [prepare] = indexes.children("team", "demo", "u-new")
    assert prepare.uid == "j-new" and [p.name for p in prepare.pods] == ["p-new"]
    assert indexes.children("team", "demo", "u-other") == []

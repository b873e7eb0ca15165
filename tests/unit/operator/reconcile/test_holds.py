"""The source-cache hold's finalizer: taken before any pod of a job that caches a source, released by
`<job>-release` when the job failed or is being deleted, and never blocking a deletion past its deadline."""

from __future__ import annotations

import datetime as dt

import pytest

from finetune_operator.builders.release_job import RELEASE_DEADLINE_SECONDS
from finetune_operator.reconcile import Create, Emit, Requeue
from finetune_operator.reconcile.actions import SetFinalizer
from finetune_operator.reconcile.holds import CACHE_HOLD_FINALIZER, cache_hold

from .conftest import NOW, children, ended, job, make_job

pytestmark = pytest.mark.unit

S3_MODEL = {"uri": "s3://models/tiny-llm", "secretRef": {"name": "bucket"}}
TAKE, DROP = SetFinalizer(CACHE_HOLD_FINALIZER, True), SetFinalizer(CACHE_HOLD_FINALIZER, False)


def held(phase: str | None = None, deleted: dt.datetime | None = None, **spec):
    j = make_job({"phase": phase} if phase else None, model=spec.pop("model", S3_MODEL), **spec)
    meta = {"finalizers": ["other.example/keep", CACHE_HOLD_FINALIZER]}
    if deleted is not None:
        meta["deletion_timestamp"] = deleted.strftime("%Y-%m-%dT%H:%M:%SZ")
    return j.model_copy(update={"metadata": j.metadata.model_copy(update=meta)})


def test_a_job_that_caches_a_source_takes_the_hold_before_anything_else() -> None:
    assert cache_hold(make_job(model=S3_MODEL), children(), NOW) == [TAKE]
    assert cache_hold(make_job(datasets={"train": {"uri": "hf://datasets/org/chat"}}), children(), NOW) == [TAKE]
    assert cache_hold(held("Training"), children(), NOW) == []


def test_a_job_that_reads_volumes_only_holds_nothing() -> None:
    assert cache_hold(make_job(), children(), NOW) == []
    assert cache_hold(make_job({"phase": "Failed"}), children(), NOW) == []


@pytest.mark.parametrize("phase", ["Succeeded", "Rejected", "Serving"])
def test_a_job_that_may_read_its_sources_again_keeps_its_hold(phase: str) -> None:
    """A spec change evaluates a Succeeded or Rejected job again, or serves it: from the cached base."""
    assert cache_hold(held(phase), children(), NOW) == []


def test_a_failed_job_is_released_once_then_drops_the_finalizer() -> None:
    assert cache_hold(held("Failed"), children(), NOW) == [Create("release")]
    assert cache_hold(held("Failed"), children(job("demo-release")), NOW) == []
    assert cache_hold(held("Failed"), children(job("demo-release", "succeeded", (ended(0),))), NOW) == [DROP]


def test_a_job_that_failed_under_an_older_operator_is_released_too() -> None:
    """No finalizer (an operator without holds took none), yet its fetch step left a hold."""
    failed = make_job({"phase": "Failed"}, model=S3_MODEL)
    assert cache_hold(failed, children(), NOW) == [Create("release")]
    assert cache_hold(failed, children(job("demo-release", "succeeded", (ended(0),))), NOW) == []


def test_a_deleted_job_waits_for_its_release_until_the_deadline() -> None:
    deleted = NOW - dt.timedelta(seconds=10)
    waiting = RELEASE_DEADLINE_SECONDS - 10 + 1
    assert cache_hold(held("Serving", deleted), children(), NOW) == [Create("release"), Requeue(waiting)]
    assert cache_hold(held("Serving", deleted), children(job("demo-release")), NOW) == [Requeue(waiting)]
    assert cache_hold(held("Serving", deleted), children(job("demo-release", "succeeded", (ended(0),))), NOW) == [DROP]


def test_a_stuck_or_failed_release_never_blocks_the_deletion_and_says_what_was_left() -> None:
    late = NOW - dt.timedelta(seconds=RELEASE_DEADLINE_SECONDS + 1)
    stuck = cache_hold(held("Training", late), children(job("demo-release")), NOW)
    assert stuck[-1] == DROP and isinstance(stuck[0], Emit) and stuck[0].type == "Warning"
    assert stuck[0].reason == "CacheHoldLeft" and "team.demo" in stuck[0].message and "holders/" in stuck[0].message
    failed = cache_hold(held("Failed"), children(job("demo-release", "failed", (ended(2),))), NOW)
    assert [type(a) for a in failed] == [Emit, SetFinalizer] and failed[-1] == DROP


def test_a_deleted_job_without_the_finalizer_does_nothing() -> None:
    j = make_job({"phase": "Training"}, model=S3_MODEL)
    j = j.model_copy(update={"metadata": j.metadata.model_copy(update={"deletion_timestamp": "2030-01-01T11:59:00Z"})})
    assert cache_hold(j, children(), NOW) == []

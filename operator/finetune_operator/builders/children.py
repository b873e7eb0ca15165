"""A `reconcile` child kind (`Create("train")`, `Apply("serving")`, ...) as the objects that make it up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from finetune_api import FineTuneJob
from finetune_api.queue import Flavor

from ..reconcile.actions import Child
from ..settings import OperatorSettings
from .config_map import build_config_map
from .eval_job import build_eval_job
from .prepare_job import build_prepare_job
from .release_job import build_release_job
from .shadow_job import build_shadow_job
from .serving import PoolMember, build_serving_objects, pool_member, pool_of
from .upload_job import build_upload_job
from .training_job import build_training_job, build_training_service

POOLED_PHASES = ("Deploying", "Serving")
"""Phases of a peer whose adapter the pool of its base serves."""


def build_child(child: Child, job: FineTuneJob, settings: OperatorSettings, attempt: int | None = None,
                flavor: Flavor | None = None, peers: Iterable[Mapping[str, Any]] = (),
                judge_url: str | None = None) -> list[dict[str, Any]]:
    """The objects of `child`: `attempt` and the admitted `flavor` shape training (`flavor` evaluation too), `peers` (other
    FineTuneJob objects, as stored) fill an adapter pool, `judge_url` is the evaluation's pool judge."""
    if child == "config":
        return [build_config_map(job, settings)]
    if child == "prepare":
        return [build_prepare_job(job, settings)]
    if child == "train-service":
        return [build_training_service(job, settings)]
    if child == "train":
        return [build_training_job(job, settings, attempt or 0, flavor)]
    if child == "eval":
        return [build_eval_job(job, settings, judge_url, flavor)]
    if child == "upload":
        return [build_upload_job(job, settings)]
    if child == "release":
        return [build_release_job(job, settings)]
    if child == "shadow":
        return [build_shadow_job(job, settings)]
    if child == "serving":
        return build_serving_objects(job, settings, adapter_pool(job, peers, settings))
    raise ValueError(f"unknown child {child!r}")


def served_by_pool(body: Mapping[str, Any]) -> tuple[FineTuneJob, str] | None:
    """(the job, its pool's name) when `body` is a deploying or serving adapter job that a pool serves;
    None otherwise. Only candidates are parsed (this runs every few seconds over every job)."""
    meta = body.get("metadata") or {}
    if (body.get("status") or {}).get("phase") not in POOLED_PHASES or meta.get("deletionTimestamp"):
        return None
    try:
        job = FineTuneJob.model_validate(dict(body))
    except ValueError:
        return None
    pool = pool_of(job)
    return (job, pool) if pool is not None else None


def pooled_jobs(namespace: str, pool: str, bodies: Iterable[Mapping[str, Any]]) -> list[FineTuneJob]:
    """The deploying or serving adapter jobs of `namespace` that `pool` serves."""
    jobs = []
    for body in bodies:
        if (body.get("metadata") or {}).get("namespace") != namespace:
            continue
        found = served_by_pool(body)
        if found is not None and found[1] == pool:
            jobs.append(found[0])
    return jobs


def adapter_pool(job: FineTuneJob, peers: Iterable[Mapping[str, Any]], settings: OperatorSettings) -> list[PoolMember]:
    """The other deploying or serving adapters of the job's pool, which own it with the job."""
    pool = pool_of(job)
    if pool is None:
        return []
    return [pool_member(peer, settings) for peer in pooled_jobs(job.metadata.namespace or "", pool, peers)
            if peer.metadata.name != job.metadata.name]

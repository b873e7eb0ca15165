"""A `reconcile` child kind (`Create("train")`, `Apply("serving")`, ...) as the objects that make it up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import base_model_name
from finetune_api.queue import Flavor

from ..reconcile.actions import Child
from ..settings import OperatorSettings
from .config_map import build_config_map
from .eval_job import build_eval_job
from .prepare_job import build_prepare_job
from .serving import PoolAdapter, build_serving_objects, pool_adapter
from .training_job import build_training_job, build_training_service

POOLED_PHASES = ("Deploying", "Serving")
"""Phases of a peer whose adapter the pool of its base serves."""


def build_child(child: Child, job: FineTuneJob, settings: OperatorSettings, attempt: int | None = None,
                flavor: Flavor | None = None, peers: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The objects of `child`: `attempt` and the admitted `flavor` shape training, `peers` (other
    FineTuneJob objects, as stored) fill an adapter pool."""
    if child == "config":
        return [build_config_map(job, settings)]
    if child == "prepare":
        return [build_prepare_job(job, settings)]
    if child == "train-service":
        return [build_training_service(job, settings)]
    if child == "train":
        return [build_training_job(job, settings, attempt or 0, flavor)]
    if child == "eval":
        return [build_eval_job(job, settings)]
    if child == "serving":
        return build_serving_objects(job, settings, adapter_pool(job, peers, settings))
    raise ValueError(f"unknown child {child!r}")


def adapter_pool(job: FineTuneJob, peers: Iterable[Mapping[str, Any]], settings: OperatorSettings) -> list[PoolAdapter]:
    """In adapter mode without a canary: the other deploying or serving adapters of the job's namespace on
    the same base, which its pool serves too. Only those candidates are parsed (this runs every few seconds)."""
    serving = job.spec.serving
    if serving.mode != "adapter" or serving.canary is not None:
        return []
    base = base_model_name(job.spec, job.metadata.name)
    pool = []
    for body in peers:
        meta = body.get("metadata") or {}
        if meta.get("namespace") != job.metadata.namespace or meta.get("name") == job.metadata.name:
            continue
        if (body.get("status") or {}).get("phase") not in POOLED_PHASES:
            continue
        try:
            peer = FineTuneJob.model_validate(dict(body))
        except ValueError:
            continue
        if peer.spec.serving.mode == "adapter" and base_model_name(peer.spec, peer.metadata.name) == base:
            pool.append(pool_adapter(peer, settings))
    return pool

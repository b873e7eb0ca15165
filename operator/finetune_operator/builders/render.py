"""Every object the operator would create for a job, by phase (`ftctl render`)."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from ..settings import OperatorSettings
from .config_map import build_config_map
from .eval_job import build_eval_job, merges_before_eval
from .prepare_job import build_prepare_job
from .release_job import build_release_job, holds_cache
from .resolve import uploads_output
from .serving import build_serving_objects
from .shadow_job import build_shadow_job
from .training_job import build_training_job, build_training_service
from .upload_job import build_upload_job


def render_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, list[dict[str, Any]]]:
    """Phase → objects, in creation order; the first training attempt, before any admission."""
    phases: dict[str, list[dict[str, Any]]] = {
        "prepare": [build_config_map(job, settings), build_prepare_job(job, settings)],
        "train": [build_training_service(job, settings), build_training_job(job, settings, attempt=0)],
    }
    if job.spec.evaluation.enabled or merges_before_eval(job):
        phases["eval"] = [build_eval_job(job, settings)]
    if uploads_output(job):
        phases["upload"] = [build_upload_job(job, settings)]
    if job.spec.serving.enabled:
        phases["serve"] = build_serving_objects(job, settings)
        if job.spec.serving.canary is not None and job.spec.serving.canary.shadow_grading is not None:
            phases["serve"].append(build_shadow_job(job, settings))
    if holds_cache(job):
        phases["release"] = [build_release_job(job, settings)]
    return phases

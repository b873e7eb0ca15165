"""Job `<job>-upload`: the final artifacts from the artifacts claim to an `s3://` output (DESIGN.md §9
Remote output). CPU only, and the only pod that gets the output's Secret (env from `secretKeyRef`)."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from ..settings import OperatorSettings
from .fetch import role_secret_env
from .names import upload_job_name
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_command, trainer_container, trainer_pod_spec, user_error_rule

UPLOAD_BACKOFF_LIMIT = 2
"""A store's transient failure is retried by a new pod; it writes the same keys (no duplicate objects)."""
UPLOAD_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def output_secret_env(job: FineTuneJob) -> list[dict[str, Any]]:
    """The output's Secret as `FT_OUTPUT_<KEY>` (role `output`, the fetch step's env names)."""
    secret = job.spec.output.secret_ref
    return role_secret_env("output", "s3", secret.name) if secret is not None else []


def build_upload_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """`python -m finetune_trainer upload`: reads the artifacts claim, writes `spec.output.uri`."""
    upload = trainer_container(job, settings, TRAINER_CONTAINER, trainer_command("upload"), env={"OMP_NUM_THREADS": "1"},
                               resources=UPLOAD_RESOURCES, extra_env=output_secret_env(job))
    pod = trainer_pod_spec(job, settings, [upload], shm_size="64Mi")
    return batch_job(job, upload_job_name(job.metadata.name), "upload", pod, UPLOAD_BACKOFF_LIMIT, [user_error_rule()])

"""Job `<job>-prepare`: fetches the sources (init container `fetch`), then checks and prepares the data,
on CPU, before any GPU is requested."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from ..settings import OperatorSettings
from .fetch import FETCH_CONTAINER, fetch_container
from .names import prepare_job_name
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_command, trainer_container, trainer_pod_spec, user_error_rule

PREPARE_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
PREPARE_BACKOFF_LIMIT = 2


def build_prepare_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """CPU only, no GPU node selector; infrastructure failures are retried by the Job, exit code 1 (bad data) is final."""
    container = trainer_container(
        job, settings, TRAINER_CONTAINER, trainer_command("prepare"), env={"OMP_NUM_THREADS": "1"}, resources=PREPARE_RESOURCES
    )
    pod = trainer_pod_spec(job, settings, [container], shm_size="1Gi", init_containers=[fetch_container(job, settings)])
    rules = [user_error_rule(FETCH_CONTAINER), user_error_rule()]
    return batch_job(job, prepare_job_name(job.metadata.name), "prepare", pod, PREPARE_BACKOFF_LIMIT, rules)

"""Job `<job>-shadow`: a canary's shadow grading (DESIGN.md §5.4). CPU only: it sends the first held-out
prompts to each arm's own Service (the tuned arm `<job>-serve`, the base arm `<job>-base`) and grades
the answers with `serving.canary.shadowGrading.graders`; its summary is `ShadowSummary`. It runs where
the serving pods run (their nodeSelector and tolerations), and the chart's serving NetworkPolicy admits
its phase label (`shadow`) to the arms."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import SHADOW_BASE_URL_ENV, SHADOW_TUNED_URL_ENV, VLLM_PORT
from ..settings import OperatorSettings
from .common import serving_placement
from .eval_job import grader_secret_env
from .names import base_arm_name, serve_name, service_url, shadow_job_name
from .resolve import namespace
from .serving import api_key_env
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_command, trainer_container, trainer_pod_spec, user_error_rule

SHADOW_BACKOFF_LIMIT = 1
SHADOW_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def build_shadow_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """`python -m finetune_trainer shadow`, with both arms' Services and the serving API key."""
    name, ns = job.metadata.name, namespace(job)
    env = {"OMP_NUM_THREADS": "1",
           SHADOW_TUNED_URL_ENV: f"{service_url(serve_name(name), ns, VLLM_PORT)}/v1",
           SHADOW_BASE_URL_ENV: f"{service_url(base_arm_name(name), ns, VLLM_PORT)}/v1"}
    shadow = trainer_container(job, settings, TRAINER_CONTAINER, trainer_command("shadow"), env=env,
                               resources=SHADOW_RESOURCES, extra_env=api_key_env(settings) + grader_secret_env(job, settings))
    node_selector, tolerations = serving_placement(job.spec.serving, job.spec.resources)
    pod = trainer_pod_spec(job, settings, [shadow], shm_size="64Mi", node_selector=node_selector, tolerations=tolerations)
    return batch_job(job, shadow_job_name(name), "shadow", pod, SHADOW_BACKOFF_LIMIT, [user_error_rule()])

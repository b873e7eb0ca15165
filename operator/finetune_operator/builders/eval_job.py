"""Job `<job>-eval`: base vs tuned on the held-out set. In merged serving mode an init container
merges first and the evaluation reads the merged model: what is evaluated is what is served."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import grader_api_key_env
from ..settings import OperatorSettings
from .common import serving_placement
from .names import eval_job_name
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_command, trainer_container, trainer_pod_spec, user_error_rule
from .vllm import cpu_kv_cache_gib, vllm_pod_resources

EVAL_BACKOFF_LIMIT = 1


def merges_before_eval(job: FineTuneJob) -> bool:
    """A LoRA/QLoRA adapter served merged is merged before it is evaluated (a full model needs none)."""
    return job.spec.serving.enabled and job.spec.serving.mode == "merged" and job.spec.adapter.type != "full"


def eval_resources(job: FineTuneJob) -> dict[str, Any]:
    """The serving replica's accelerators (evaluation generates like serving does), else CPU only."""
    serving = job.spec.serving
    return vllm_pod_resources(serving.gpus, job.spec.resources.gpu_resource_name, serving.cpu, serving.memory)


def grader_secret_env(job: FineTuneJob) -> list[dict[str, Any]]:
    """The API keys of `score_model` graders, from their Secrets (never in the config or a ConfigMap)."""
    return [
        {"name": grader_api_key_env(g.name),
         "valueFrom": {"secretKeyRef": {"name": g.api_key_secret.name, "key": g.api_key_secret.key}}}
        for g in job.spec.evaluation.graders if g.api_key_secret is not None
    ]


def build_eval_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    resources = eval_resources(job)
    env = {"OMP_NUM_THREADS": "1" if settings.cpu_runtime else "4"}
    if settings.cpu_runtime:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(None))
        env["DS_ACCELERATOR"] = "cpu"
    evaluate = trainer_container(job, settings, TRAINER_CONTAINER, trainer_command("evaluate"), env=env, resources=resources,
                                 extra_env=grader_secret_env(job))
    init = [trainer_container(job, settings, "merge", trainer_command("merge"), env=env, resources=resources)] if merges_before_eval(job) else None
    node_selector, tols = serving_placement(job.spec.serving, job.spec.resources)
    pod = trainer_pod_spec(
        job,
        settings,
        [evaluate],
        shm_size="2Gi",
        init_containers=init,
        node_selector=node_selector,
        tolerations=tols,
    )
    return batch_job(job, eval_job_name(job.metadata.name), "eval", pod, EVAL_BACKOFF_LIMIT, [user_error_rule()])

"""Job `<job>-eval`: base vs tuned on the held-out set. In merged serving mode an init container
merges first and the evaluation reads the merged model: what is evaluated is what is served."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from finetune_api.job import FineTuneJobSpec
from finetune_api.contract.vllm import (API_KEY_SECRET, API_KEY_SECRET_KEY, JUDGE_ENDPOINT_ENV, JUDGE_MODEL_ENV, grader_api_key_env,
                                        pooled_base_name)
from ..settings import OperatorSettings
from finetune_api.queue import Flavor
from .common import serving_placement, tolerations
from .kueue import JOB_INTEGRATION, kueue_labels
from .names import eval_job_name
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_command, trainer_container, trainer_pod_spec, user_error_rule
from .vllm import cpu_kv_cache_gib, vllm_pod_resources

EVAL_BACKOFF_LIMIT = 1


def merges_before_eval(job: FineTuneJob) -> bool:
    """A LoRA/QLoRA adapter served merged is merged before it is evaluated (a full model needs none)."""
    return job.spec.serving.enabled and job.spec.serving.mode == "merged" and job.spec.adapter.type != "full"


def eval_resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    """The serving replica's accelerators (evaluation generates like serving does), else CPU only."""
    serving = spec.serving
    return vllm_pod_resources(serving.gpus, spec.resources.gpu_resource_name, serving.cpu, serving.memory)


def pool_judged_graders(job: FineTuneJob) -> list[str]:
    """The `score_model` graders without `endpoint`: on a cluster they ask the base model served by the
    namespace's adapter pool for the job's base (DESIGN.md §9, "The default judge on a cluster")."""
    return [g.name for g in job.spec.evaluation.graders if g.type == "score_model" and g.endpoint is None]


def grader_secret_env(job: FineTuneJob, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The API keys of `score_model` graders, from their Secrets (never in the config or a ConfigMap): a
    grader's `apiKeySecret`, else for a pool-judged grader the pool's own key Secret."""
    pooled = set(pool_judged_graders(job))
    env = []
    for g in job.spec.evaluation.graders:
        if g.api_key_secret is not None:
            ref = {"name": g.api_key_secret.name, "key": g.api_key_secret.key}
        elif g.name in pooled and settings.serving_api_key:
            ref = {"name": API_KEY_SECRET, "key": API_KEY_SECRET_KEY}
        else:
            continue
        env.append({"name": grader_api_key_env(g.name), "valueFrom": {"secretKeyRef": ref}})
    return env


def judge_env(job: FineTuneJob, judge_url: str | None) -> dict[str, str]:
    """Where pool-judged graders ask: `judge_url`, the pool's Service (given once the operator saw a ready
    replica), under the base's name in the pool."""
    if judge_url is None or not pool_judged_graders(job):
        return {}
    return {JUDGE_ENDPOINT_ENV: f"{judge_url}/v1", JUDGE_MODEL_ENV: pooled_base_name(job.spec)}


def build_eval_job(job: FineTuneJob, settings: OperatorSettings, judge_url: str | None = None,
                   flavor: Flavor | None = None) -> dict[str, Any]:
    """The evaluation Job; `judge_url` is the adapter pool's Service that pool-judged graders ask, `flavor`
    the embedded queue's admission of its accelerators (its node labels and tolerations). In Kueue mode
    a Job that requests accelerators is labelled for its LocalQueue and created suspended."""
    resources = eval_resources(job.spec)
    env = {"OMP_NUM_THREADS": "1" if settings.cpu_runtime else "4"}
    if settings.cpu_runtime:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(None))
        env["DS_ACCELERATOR"] = "cpu"
    env |= judge_env(job, judge_url)
    evaluate = trainer_container(job, settings, TRAINER_CONTAINER, trainer_command("evaluate"), env=env, resources=resources,
                                 extra_env=grader_secret_env(job, settings))
    init = [trainer_container(job, settings, "merge", trainer_command("merge"), env=env, resources=resources)] if merges_before_eval(job) else None
    node_selector, tols = serving_placement(job.spec.serving, job.spec.resources)
    if flavor is not None:
        node_selector = {**(node_selector or {}), **(flavor.node_labels or {})} or None
        tols = tols + tolerations(flavor.tolerations)
    pod = trainer_pod_spec(
        job,
        settings,
        [evaluate],
        shm_size="2Gi",
        init_containers=init,
        node_selector=node_selector,
        tolerations=tols,
    )
    queued = kueue_labels(job, settings, JOB_INTEGRATION, job.spec.serving.gpus)
    return batch_job(job, eval_job_name(job.metadata.name), "eval", pod, EVAL_BACKOFF_LIMIT, [user_error_rule()],
                     extra_labels=queued, job_spec={"suspend": True} if queued else None)

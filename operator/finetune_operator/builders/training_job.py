"""Training: headless Service `<job>-train` and Indexed Job `<job>-train-a<N>` (DESIGN.md §4).

One pod per node; `torchrun` (or `accelerate launch`), run in-process by our launcher wrapper so that a
crashed worker exits 2 and not 1, reads the node's rank from the completion index and derives every
process rank itself. Retries are the operator's (each one a new Job), so the Job
has `backoffLimit: 0` and a pod failure policy that labels why it failed:

- rule 0, exit code 1 of the trainer: a user error (bad data or config), never retried;
- rule 1, the `DisruptionTarget` condition (preemption, node drain, eviction): `FailJob` too, because
  a static torchrun gang cannot take back one replaced pod; the whole gang stops at once and the
  operator retries from the last checkpoint without spending the retry budget.

`training_failure_kind` reads that verdict back from the Job's status.
"""

from __future__ import annotations

from typing import Any, Literal

from finetune_api.contract.launch import ATTEMPT_ENV, DEFAULT_MASTER_PORT, pod_launch, processes_per_node

from finetune_api import FineTuneJob
from finetune_api.job import FineTuneJobSpec, ResourcesSpec
from finetune_api.queue import Flavor
from ..deadlines import training_deadline_seconds
from ..settings import OperatorSettings
from .common import CONFIG_PATH, labels, object_meta, parse_quantity, pod_resources, tolerations
from .kueue import kueue_labels
from .resolve import jit_ops_dir
from .names import train_job_name, train_service_name
from .trainer_pod import TRAINER_CONTAINER, batch_job, trainer_container, trainer_pod_spec, user_error_rule

MASTER_PORT = DEFAULT_MASTER_PORT
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RULE_USER_ERROR = 0
RULE_DISRUPTION = 1
CHECKPOINT_GRACE_SECONDS = 120


def training_resources(res: ResourcesSpec) -> dict[str, Any]:
    """8 CPUs and 64Gi per GPU unless the spec says otherwise; 2 CPUs and 8Gi on CPU."""
    return pod_resources(res.gpus_per_node, res.gpu_resource_name, res.cpu, res.memory, 8, 64, ("2", "8Gi"))


def threads_per_process(spec: FineTuneJobSpec) -> int:
    cpu = training_resources(spec.resources)["requests"]["cpu"]
    return max(1, int(parse_quantity(cpu)) // processes_per_node(spec))


def build_training_service(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """Headless Service: stable DNS `<train-job>-<index>.<job>-train` before the pods are ready."""
    name = job.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, train_service_name(name), "train"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels(name, "train"),
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT, "protocol": "TCP"}],
        },
    }


def build_training_job(
    job: FineTuneJob, settings: OperatorSettings, attempt: int, flavor: Flavor | None = None
) -> dict[str, Any]:
    """The gang of training pods for one attempt; `flavor` is the embedded queue's admission."""
    name = job.metadata.name
    res = job.spec.resources
    job_name = train_job_name(name, attempt)
    env = {
        "PET_NNODES": str(res.nodes),
        "PET_NPROC_PER_NODE": str(processes_per_node(job.spec)),
        "PET_MASTER_ADDR": f"{job_name}-0.{train_service_name(name)}",
        "PET_MASTER_PORT": str(MASTER_PORT),
        ATTEMPT_ENV: str(attempt),
        "OMP_NUM_THREADS": str(threads_per_process(job.spec)),
    }
    if settings.cpu_runtime or res.gpus_per_node == 0:
        env["DS_ACCELERATOR"] = "cpu"
        env["TORCH_EXTENSIONS_DIR"] = jit_ops_dir(job, settings)
    node_rank = {
        "name": "PET_NODE_RANK",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
    }
    command, args = pod_launch(job.spec, CONFIG_PATH)
    container = trainer_container(
        job, settings, TRAINER_CONTAINER, command, args, env=env, resources=training_resources(res), extra_env=[node_rank]
    )
    container["ports"] = [{"name": "rendezvous", "containerPort": MASTER_PORT, "protocol": "TCP"}]
    node_selector = {**(res.node_selector or {}), **((flavor.node_labels or {}) if flavor else {})}
    pod = trainer_pod_spec(
        job,
        settings,
        [container],
        shm_size=res.shared_memory,
        node_selector=node_selector,
        tolerations=tolerations(res.tolerations) + tolerations(flavor.tolerations if flavor else None),
    )
    pod["subdomain"] = train_service_name(name)
    pod["terminationGracePeriodSeconds"] = CHECKPOINT_GRACE_SECONDS
    if settings.priority_class_name:
        pod["priorityClassName"] = settings.priority_class_name
    rules = [user_error_rule(), {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    obj = batch_job(
        job,
        job_name,
        "train",
        pod,
        backoff_limit=0,
        failure_rules=rules,
        extra_labels=kueue_labels(job, settings),
        job_spec={
            "completionMode": "Indexed",
            "completions": res.nodes,
            "parallelism": res.nodes,
            "suspend": settings.queue_mode == "kueue",
            "activeDeadlineSeconds": training_deadline_seconds(job, settings),
        },
    )
    obj["metadata"]["annotations"]["finetune.dev/attempt"] = str(attempt)
    return obj


FailureKind = Literal["user", "preempted", "deadline", "infrastructure"]


def training_failure_kind(job_status: dict[str, Any]) -> FailureKind | None:
    """Why a training Job failed, from its `Failed` (or earlier `FailureTarget`) condition; None while it
    has not failed.

    The Job controller names the matched pod-failure-policy rule in the condition message
    ("… matching FailJob rule at index N").
    """
    for cond in job_status.get("conditions") or []:
        if cond.get("type") not in ("Failed", "FailureTarget") or cond.get("status") != "True":
            continue
        if cond.get("reason") == "DeadlineExceeded":
            return "deadline"
        if cond.get("reason") == "PodFailurePolicy":
            message = cond.get("message", "")
            if f"rule at index {RULE_USER_ERROR}" in message:
                return "user"
            if f"rule at index {RULE_DISRUPTION}" in message:
                return "preempted"
        return "infrastructure"
    return None

"""The pod template and batch Job shared by the trainer phases (prepare, train, evaluate)."""

from __future__ import annotations

from typing import Any

from finetune_api.contract.launch import trainer_module_args
from finetune_api.contract.exit_codes import USER_ERROR

from finetune_api import FineTuneJob
from finetune_api.resolved import claim_of, pvc_claims
from ..settings import OperatorSettings
from .common import (
    CONFIG_PATH,
    TERMINATION_LOG,
    claim_volumes,
    config_volume,
    container_security_context,
    env_list,
    labels,
    object_meta,
    placement,
    pod_security_context,
    scratch_env,
    scratch_volumes,
    with_scratch_storage,
)
from .resolve import output_uri

TRAINER_CONTAINER = "trainer"


def trainer_command(phase: str) -> list[str]:
    """`python -m finetune_trainer <phase> --config …` as a list (never a shell string)."""
    return ["python", *trainer_module_args(phase, CONFIG_PATH)]


def trainer_container(
    job: FineTuneJob,
    settings: OperatorSettings,
    name: str,
    command: list[str],
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
    extra_env: list[dict[str, Any]] | None = None,
    hub: bool = False,
) -> dict[str, Any]:
    """A trainer-image container with the config, claims and scratch mounted. Offline unless `hub`
    (the fetch step): every other phase reads fetched copies, never downloads."""
    _, config_mount = config_volume(job.metadata.name)
    _, claim_mounts = _claims(job, settings)
    _, scratch_mounts = scratch_volumes("1Gi", settings.scratch_size)
    # The trainer writes its summary where this variable says; naming the path keeps the container
    # and the pod's terminationMessagePath in one place.
    offline = {} if hub else {"HF_HUB_OFFLINE": "1"}
    values = {**scratch_env(), **offline, "FT_TERMINATION_LOG": TERMINATION_LOG, **(env or {})}
    container: dict[str, Any] = {
        "name": name,
        "image": job.spec.trainer_image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": (extra_env or []) + env_list(values),
        "resources": with_scratch_storage(resources or {}, settings),
        "volumeMounts": [config_mount, *claim_mounts, *scratch_mounts],
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if args:
        container["args"] = args
    return container


def _claims(job: FineTuneJob, settings: OperatorSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    out = output_uri(job, settings)
    writable = list(dict.fromkeys(c for c in [claim_of(out), settings.artifacts_pvc] if c))  # output, source cache
    claims = list(dict.fromkeys([*pvc_claims(job, default_output=out), settings.artifacts_pvc]))
    return claim_volumes(claims, settings.pvc_mount_root, writable)


def trainer_pod_spec(
    job: FineTuneJob,
    settings: OperatorSettings,
    containers: list[dict[str, Any]],
    shm_size: str,
    init_containers: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    config, _ = config_volume(job.metadata.name)
    claim_vols, _ = _claims(job, settings)
    scratch_vols, _ = scratch_volumes(shm_size, settings.scratch_size)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": [config, *claim_vols, *scratch_vols],
    }
    if init_containers:
        spec["initContainers"] = init_containers
    spec.update(placement(settings, node_selector, tolerations))
    return spec


def user_error_rule(container: str = TRAINER_CONTAINER) -> dict[str, Any]:
    """Exit code 1 is a user error (bad data or config): retrying cannot help."""
    return {
        "action": "FailJob",
        "onExitCodes": {"containerName": container, "operator": "In", "values": [USER_ERROR]},
    }


def batch_job(
    job: FineTuneJob,
    name: str,
    phase: str,
    pod_spec: dict[str, Any],
    backoff_limit: int,
    failure_rules: list[dict[str, Any]],
    extra_labels: dict[str, str] | None = None,
    job_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job whose pods carry the same labels as the Job."""
    meta = object_meta(job, name, phase, extra_labels)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": {"rules": failure_rules},
            **(job_spec or {}),
            "template": {
                "metadata": {"labels": labels(job.metadata.name, phase), "annotations": dict(meta["annotations"])},
                "spec": pod_spec,
            },
        },
    }

"""Job `<job>-release`: drops the job's hold on the source cache and evicts down to the size limit
(DESIGN.md §9 Sources). The operator does not mount the artifacts claim, so a pod does it: CPU only,
the trainer image, the artifacts claim and nothing else (no ConfigMap: it runs while the job is being
deleted, when the job's other children may already be gone), no Secret, no service account token."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from finetune_api.contract.sources import CACHED_SCHEMES, cache_holder, release_module_args
from finetune_api.resolved import job_sources

from ..settings import OperatorSettings
from .common import (claim_volumes, container_security_context, env_list, placement, pod_security_context, scratch_env,
                     scratch_volumes, with_scratch_storage)
from .names import release_job_name
from .resolve import source_cache_dir
from .trainer_pod import TRAINER_CONTAINER, batch_job, user_error_rule

RELEASE_BACKOFF_LIMIT = 2
RELEASE_DEADLINE_SECONDS = 300
"""How long the release may take, all pods together; the operator stops waiting for it then too."""
RELEASE_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def holds_cache(job: FineTuneJob) -> bool:
    """The job's fetch step copies a source into the cache (and holds it there): it has a release Job."""
    return any(source.scheme in CACHED_SCHEMES for source, _ in job_sources(job.spec).values())


def build_release_job(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """`python -m finetune_trainer.fetch.release --cache … --holder <ns>.<job>` (a list, never a shell string)."""
    volumes, mounts = claim_volumes([settings.artifacts_pvc], settings.pvc_mount_root, [settings.artifacts_pvc])
    scratch, scratch_mounts = scratch_volumes("16Mi", settings.scratch_size)
    holder = cache_holder(job.metadata.namespace or "", job.metadata.name)
    container = {
        "name": TRAINER_CONTAINER,
        "image": job.spec.trainer_image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", *release_module_args(source_cache_dir(settings), holder, settings.source_cache_max_bytes)],
        "env": env_list({**scratch_env(), "HF_HUB_OFFLINE": "1"}),
        "resources": with_scratch_storage(RELEASE_RESOURCES, settings),
        "volumeMounts": [*mounts, *scratch_mounts],
        "securityContext": container_security_context(),
    }
    pod = {"restartPolicy": "Never", "serviceAccountName": settings.service_account,
           "automountServiceAccountToken": False, "enableServiceLinks": False,
           "securityContext": pod_security_context(), "containers": [container], "volumes": [*volumes, *scratch],
           **placement(settings, None, None)}
    return batch_job(job, release_job_name(job.metadata.name), "release", pod, RELEASE_BACKOFF_LIMIT, [user_error_rule()],
                     job_spec={"activeDeadlineSeconds": RELEASE_DEADLINE_SECONDS})

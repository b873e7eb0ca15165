"""The fetch step's container: first in the `<job>-prepare` pod (CPU only), the only container that
gets the sources' credentials (env from `secretKeyRef`, never a value the operator reads)."""

from __future__ import annotations

from typing import Any

from finetune_api import FineTuneJob
from finetune_api.contract.sources import CREDENTIAL_KEYS, credential_env
from finetune_api.resolved import job_sources
from finetune_api.sources import SourceRole

from ..settings import OperatorSettings
from .trainer_pod import trainer_command, trainer_container

FETCH_CONTAINER = "fetch"
FETCH_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def role_secret_env(role: SourceRole, scheme: str, secret_name: str) -> list[dict[str, Any]]:
    """`FT_<ROLE>_<KEY>` ← `secretKeyRef` for every key of `scheme`'s Secret (optional keys stay unset
    when the Secret lacks them). The fetch step and the upload Job use this one route."""
    env: list[dict[str, Any]] = []
    for key, required in CREDENTIAL_KEYS.get(scheme, ()):
        selector: dict[str, Any] = {"name": secret_name, "key": key}
        if not required:
            selector["optional"] = True
        env.append({"name": credential_env(role, key), "valueFrom": {"secretKeyRef": selector}})
    return env


def secret_env(job: FineTuneJob) -> list[dict[str, Any]]:
    """Env from the Secret of every source that names one."""
    env: list[dict[str, Any]] = []
    for role, (source, ref) in job_sources(job.spec).items():
        secret = job.spec.model.secret_ref if ref is None else ref.secret_ref
        if secret is not None:
            env.extend(role_secret_env(role, source.scheme, secret.name))
    return env


def fetch_container(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """`python -m finetune_trainer fetch`: resolves and downloads the sources (hub access allowed here)."""
    return trainer_container(job, settings, FETCH_CONTAINER, trainer_command("fetch"),
                             env={"OMP_NUM_THREADS": "1"}, resources=FETCH_RESOURCES, extra_env=secret_env(job), hub=True)

"""`run.json`: what was trained, with what numbers, by which library versions, on which data."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, UTC
from importlib import metadata
from pathlib import Path
from typing import Any

from finetune_api.contract.launch import ATTEMPT_ENV
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..atomic_json import write_json_atomic

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "deepspeed", "bitsandbytes", "tokenizers")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the training stack (None when a library is absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def attempt_number(config: ResolvedConfig) -> int:
    """The attempt this process belongs to: `$FT_ATTEMPT` (each retry is a new Job with the same config),
    else the config's."""
    value = os.environ.get(ATTEMPT_ENV, "")
    return int(value) if value.isdigit() else config.attempt


def _fetched_sources(config: ResolvedConfig) -> list[dict[str, Any]]:
    """What the fetch step resolved (role, URI, identity), for reproducing the run; [] without one."""
    try:
        fetched = json.loads(ArtifactLayout(config.paths.output).sources_json.read_text())
    except (OSError, ValueError):
        return []
    keep = ("role", "uri", "identity")
    return [{k: s[k] for k in keep if k in s} for s in fetched.get("sources", [])]


def build_run_record(
    config: ResolvedConfig,
    hyperparameters: dict[str, Any],
    data_hash: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record as a JSON-ready dict; `sources` are the fetch step's resolved identities."""
    return {
        "job": config.job,
        "namespace": config.namespace,
        "generation": config.generation,
        "attempt": attempt_number(config),
        "method": config.spec.method.type,
        "adapter": config.spec.adapter.type,
        "config": config.model_dump(by_alias=True, mode="json", exclude_none=True),
        "hyperparameters": hyperparameters,
        "versions": library_versions(),
        "dataHash": data_hash,
        "sources": _fetched_sources(config),
        "writtenAt": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def write_run_record(layout: ArtifactLayout, record: dict[str, Any]) -> Path:
    """Write run.json atomically (a retried attempt overwrites the previous one)."""
    write_json_atomic(layout.run_json, record, sort_keys=True)
    return layout.run_json

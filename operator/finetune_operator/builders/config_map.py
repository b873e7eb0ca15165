"""ConfigMap `<job>-config`: the resolved config every trainer phase reads from `--config`."""

from __future__ import annotations

import json
from typing import Any

from finetune_api import FineTuneJob
from ..settings import OperatorSettings
from .common import CONFIG_FILE, object_meta
from .names import config_map_name
from .resolve import resolve_config


CONFIG_MAP_LIMIT = 1 << 20
"""The API server refuses a ConfigMap whose data exceeds 1 MiB."""


def build_config_map(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """The config as sorted JSON, so an unchanged spec yields a byte-identical ConfigMap."""
    config = resolve_config(job, settings).to_api()
    text = json.dumps(config, indent=2, sort_keys=True)
    if len(text.encode()) > CONFIG_MAP_LIMIT:
        raise ValueError(
            f"spec.evaluation.graders: the job's config is {len(text.encode())} bytes and a ConfigMap holds at most"
            f" {CONFIG_MAP_LIMIT} (1 MiB): shorten the graders' source, jsonSchema or pattern, or the chat template"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(job, config_map_name(job.metadata.name), "prepare"),
        "data": {CONFIG_FILE: text},
    }

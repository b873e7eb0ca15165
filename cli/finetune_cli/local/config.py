"""Turn a FineTuneJob manifest into the local runtime's resolved config (DESIGN.md §7).

The cluster maps `pvc://` URIs to mounts; locally, relative paths are relative to the manifest's
directory and the artifacts go to the work directory. Fields that cannot apply on this machine are
listed once, never silently dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

from finetune_api import FineTuneJob
from finetune_api.resolved import ResolvedConfig
from finetune_operator.builders.resolve import resolve_paths

BOOTSTRAP_ANNOTATION = "finetune.dev/local-bootstrap"
SOURCE_CACHE_ENV = "FT_SOURCE_CACHE"
SOURCE_CACHE_MAX_ENV = "FT_SOURCE_CACHE_MAX_BYTES"


def source_cache() -> tuple[str, int | None]:
    """Where `ftctl run` caches hub and S3 sources (shared by every run on this machine), and its limit."""
    root = os.environ.get(SOURCE_CACHE_ENV) or str(Path.home() / ".cache" / "finetune-operator" / "sources")
    limit = os.environ.get(SOURCE_CACHE_MAX_ENV, "").strip()
    return root, int(limit) if limit.isdigit() else None


def local_path(uri: str, base_dir: Path) -> str:
    """A spec URI as a local path: relative paths against `base_dir`; remote URIs stay as they are.
    (`file://` never gets here: admission refuses it, local paths carry no scheme.)"""
    if "://" in uri:
        return uri
    path = Path(uri)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def local_config(job: FineTuneJob, manifest_path: Path, workdir: Path) -> ResolvedConfig:
    """The resolved config every local phase reads."""
    base = manifest_path.resolve().parent
    spec = job.spec
    paths = resolve_paths(spec, str((workdir / "artifacts").resolve()), lambda uri: local_path(uri, base))
    cache, cache_limit = source_cache()
    return ResolvedConfig(
        job=job.metadata.name,
        namespace=job.metadata.namespace or "local",
        generation=job.metadata.generation or 1,
        runtime="local",
        spec=spec,
        paths=paths,
        served_model_name=job.metadata.name,
        source_cache=cache,
        source_cache_max_bytes=cache_limit,
    )


def inapplicable_fields(job: FineTuneJob, gpus_available: int) -> list[str]:
    """Settings that have no effect on this machine, worded for the user."""
    spec = job.spec
    res = spec.resources
    notes: list[str] = []
    if res.nodes > 1:
        notes.append(f"spec.resources.nodes={res.nodes}: runs as 1 node here")
    if res.gpus_per_node > gpus_available:
        notes.append(
            f"spec.resources.gpusPerNode={res.gpus_per_node}: this machine has {gpus_available} GPU(s); "
            f"training runs on {'CPU' if gpus_available == 0 else f'{gpus_available} GPU(s)'}"
        )
    if res.node_selector or res.tolerations:
        notes.append("spec.resources.nodeSelector/tolerations: no scheduling here")
    if res.cpu or res.memory:
        notes.append("spec.resources.cpu/memory: no resource limits here")
    if spec.queue.name != "default" or spec.queue.priority_class:
        notes.append(f"spec.queue ({spec.queue.name}): no queue here; the job runs at once")
    if spec.serving.replicas > 1:
        notes.append(f"spec.serving.replicas={spec.serving.replicas}: one local server")
    if spec.serving.canary is not None:
        notes.append("spec.serving.canary: no traffic split locally; the tuned model is served")
    if spec.serving.node_selector or spec.serving.tolerations or spec.serving.cpu or spec.serving.memory:
        notes.append("spec.serving placement and resources: not applied locally")
    if spec.trainer_image or spec.serving.image:
        notes.append("images: the local runtime uses this machine's Python environment")
    return notes

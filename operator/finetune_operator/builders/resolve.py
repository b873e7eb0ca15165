"""The resolved config the operator writes into `<job>-config`: spec URIs mapped to pod paths."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from finetune_api import FineTuneJob
from finetune_api.job import DatasetRef, FineTuneJobSpec
from finetune_api.contract.sources import SOURCE_CACHE_DIR
from finetune_api.sources import parse_source
from finetune_api.resolved import ResolvedConfig, ResolvedPaths, uri_to_path
from ..settings import OperatorSettings
from .common import job_labels


def output_uri(job: FineTuneJob, settings: OperatorSettings) -> str:
    """Where the pods write the artifacts: a `pvc://` `spec.output.uri`, else the operator's artifacts
    claim under `<namespace>/<job>` (also for an `s3://` output, which the upload Job fills from there:
    training, evaluation and serving read a volume)."""
    if job.spec.output.uri and not uploads_output(job):
        return job.spec.output.uri
    return f"pvc://{settings.artifacts_pvc}/{namespace(job)}/{job.metadata.name}"


def uploads_output(job: FineTuneJob) -> bool:
    """An `s3://` `spec.output.uri`: the final artifacts go there in the Uploading phase."""
    return parse_source(job.spec.output.uri or "").scheme == "s3"


def source_cache_dir(settings: OperatorSettings) -> str:
    """The source cache on the operator's artifacts claim (every job's trainer pods mount it)."""
    return uri_to_path(f"pvc://{settings.artifacts_pvc}/{SOURCE_CACHE_DIR}", settings.pvc_mount_root)


JIT_OPS_DIR = ".jit-ops"


def jit_ops_dir(job: FineTuneJob, settings: OperatorSettings) -> str:
    """Where DeepSpeed compiles its JIT ops on the CPU path (the shm comm op ZeRO uses over gloo): on
    the artifacts claim, per namespace and trainer image, so each op is compiled once and not by
    every pod into its own scratch (a minute or more per pod); torch's build lock serialises pods that
    start together. Per namespace because a tenant must not plant a shared object another loads."""
    image = job.spec.trainer_image or settings.trainer_image
    key = hashlib.sha256(image.encode()).hexdigest()[:16]
    return uri_to_path(f"pvc://{settings.artifacts_pvc}/{JIT_OPS_DIR}/{namespace(job)}/{key}", settings.pvc_mount_root)


def namespace(job: FineTuneJob) -> str:
    return job.metadata.namespace or "default"


def resolve_paths(spec: FineTuneJobSpec, output: str, to_path: Callable[[str], str]) -> ResolvedPaths:
    """Every location of `spec` as the trainer sees it, mapped by `to_path` (pod mounts, local dirs)."""

    def optional(ref: DatasetRef | None) -> str | None:
        return to_path(ref.uri) if ref is not None else None

    return ResolvedPaths(
        output=to_path(output),
        model=to_path(spec.model.uri),
        train=to_path(spec.datasets.train.uri),
        validation=optional(spec.datasets.validation),
        eval=optional(spec.datasets.eval),
        regression=optional(spec.evaluation.regression),
        suites={suite.name: to_path(suite.dataset.uri) for suite in spec.evaluation.suites if suite.dataset is not None},
    )


def resolve_config(job: FineTuneJob, settings: OperatorSettings, attempt: int = 0) -> ResolvedConfig:
    """What every trainer phase of `job` reads from `--config`."""
    paths = resolve_paths(job.spec, output_uri(job, settings), lambda uri: uri_to_path(uri, settings.pvc_mount_root))
    return ResolvedConfig(
        job=job.metadata.name,
        namespace=namespace(job),
        generation=job.metadata.generation or 1,
        attempt=attempt,
        runtime="kubernetes",
        spec=job.spec,
        paths=paths,
        served_model_name=job.metadata.name,
        labels=job_labels(job.metadata.name),
        source_cache=source_cache_dir(settings),
        source_cache_max_bytes=settings.source_cache_max_bytes,
    )

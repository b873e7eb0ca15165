"""FineTuneJobs for the builder tests: every example manifest, plus jobs built from the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import functools

import kubernetes_validate
import kubernetes_validate.utils
import pytest

from finetune_api import FineTuneJob
from finetune_cli.manifests import load_job

# kubernetes-validate re-reads its 3 MB definitions file on every call; memoising the file read keeps
# these tests fast and leaves the validation itself untouched.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def example_jobs() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if "kind: FineTuneJob" in p.read_text())


def with_identity(job: FineTuneJob, generation: int = 2) -> FineTuneJob:
    """What the API server adds: namespace, uid, generation."""
    job = job.model_copy(deep=True)
    job.metadata.namespace = job.metadata.namespace or "team-a"
    job.metadata.uid = f"uid-{job.metadata.name}"
    job.metadata.generation = generation
    return job


def make_job(name: str = "ft", **spec: Any) -> FineTuneJob:
    body = {
        "model": {"uri": "pvc://models/base-7b", "name": "base-7b"},
        "datasets": {"train": {"uri": "pvc://datasets/train.jsonl"}, "eval": {"uri": "pvc://datasets/eval.jsonl"}},
        **spec,
    }
    return with_identity(FineTuneJob.model_validate({"metadata": {"name": name}, "spec": body}))


@pytest.fixture(params=example_jobs(), ids=lambda p: p.stem)
def example_job(request: pytest.FixtureRequest) -> FineTuneJob:
    return with_identity(load_job(request.param))


def validate(obj: dict[str, Any]) -> None:
    """The official Kubernetes 1.32 OpenAPI schema, strict (unknown fields fail)."""
    kubernetes_validate.validate(obj, "1.32", strict=True)

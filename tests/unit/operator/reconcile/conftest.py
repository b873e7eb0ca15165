"""Builders of FineTuneJobs and observed children for the decision tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_operator.reconcile import JobState, ObservedChildren, PodState, PatchStatus
from finetune_operator.settings import OperatorSettings

NOW = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def make_job(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> FineTuneJob:
    body = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "demo", "namespace": "team", "uid": "u-1", "generation": generation},
        "spec": {
            "model": {"uri": "pvc://models/tiny", "name": "tiny"},
            "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
            "resources": {"nodes": 2, "gpusPerNode": 4},
            "retry": {"maxAttempts": 3, "backoffSeconds": 30},
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return FineTuneJob.model_validate(body)


def job(name: str, outcome: str = "running", pods: tuple[PodState, ...] = (), **kw: Any) -> JobState:
    return JobState(name=name, outcome=outcome, pods=pods, **kw)  # type: ignore[arg-type]


def ended(code: int, message: str = "", disrupted: bool = False, index: int = 0) -> PodState:
    return PodState(name=f"pod-{index}", phase="Succeeded" if code == 0 else "Failed", exit_code=code,
                    message=message, disrupted=disrupted, index=index)


def children(*jobs: JobState, **kw: Any) -> ObservedChildren:
    return ObservedChildren(jobs={j.name: j for j in jobs}, **kw)


def status_patch(actions: list) -> dict[str, Any]:
    patches = [a for a in actions if isinstance(a, PatchStatus)]
    assert len(patches) == 1, f"expected one status patch per transition, got {actions}"
    return patches[0].patch


def apply_patch(job_: FineTuneJob, patch: dict[str, Any]) -> FineTuneJob:
    """The job as the API server returns it after the merge patch."""
    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = merge(a.get(k), v)
            return out
        return b

    body = job_.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["status"] = merge(body.get("status") or {}, patch)
    return FineTuneJob.model_validate(body)


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(queue_mode="embedded")

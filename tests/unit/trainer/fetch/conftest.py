"""Fixtures of the fetch-step tests: a resolved config for a job whose sources are given, and a runner
for `python -m finetune_trainer fetch` as the pod and `ftctl run` start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_api.contract.sources import FetchSummary
from finetune_api.resolved import ResolvedConfig, ResolvedPaths

REPO = Path(__file__).resolve().parents[4]


@dataclass
class FetchRun:
    returncode: int
    output: str
    summary: FetchSummary | None


def job_config(tmp_path: Path, model: dict[str, Any], train: dict[str, Any], cache: Path, name: str = "job-a",
               cache_max_bytes: int | None = None) -> ResolvedConfig:
    """The resolved config of a minimal job reading `model` and `train` (URIs as the spec gives them)."""
    job = FineTuneJob.model_validate({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {"model": model, "datasets": {"train": train}},
    })
    out = tmp_path / name / "artifacts"
    paths = ResolvedPaths(output=str(out), model=model["uri"], train=train["uri"])
    return ResolvedConfig(job=name, namespace="ns", spec=job.spec, paths=paths, runtime="local",
                          source_cache=str(cache), source_cache_max_bytes=cache_max_bytes)


def run_trainer_phase(phase: str, config: ResolvedConfig, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m finetune_trainer <phase>` on `config`, as the pod and `ftctl run` start it, with `env` added."""
    out = Path(config.paths.output)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out.parent / "config.json"
    config_path.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    pythonpath = os.pathsep.join(str(REPO / p) for p in ("api", "operator", "trainer", "cli")) + os.pathsep + str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "finetune_trainer", phase, "--config", str(config_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": pythonpath, "FT_TERMINATION_LOG": str(out.parent / "termination"), **(env or {})},
    )


@pytest.fixture
def run_fetch() -> Callable[..., FetchRun]:
    """Run the fetch phase as a process with `env` added; its summary read from `sources.json`."""

    def run(config: ResolvedConfig, env: dict[str, str] | None = None) -> FetchRun:
        proc = run_trainer_phase("fetch", config, env)
        out = Path(config.paths.output)
        sources = out / "sources.json"
        summary = FetchSummary.model_validate(json.loads(sources.read_text())) if proc.returncode == 0 else None
        return FetchRun(proc.returncode, proc.stdout + proc.stderr, summary)

    return run

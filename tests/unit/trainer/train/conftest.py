"""Fixtures of the train tests: a prepared run directory around the tiny chat model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import torch

from finetune_api.resolved import ArtifactLayout, ResolvedConfig, ResolvedPaths
from finetune_trainer.data.prepare import run_prepare

ROOT = Path(__file__).resolve().parents[4]
QUICKSTART = ROOT / "examples" / "data" / "quickstart"
TORCH_EXTENSIONS = ROOT / ".cache" / "torch_extensions"
MakeRun = Callable[..., ResolvedConfig]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BASE_SPEC: dict[str, Any] = {
    "model": {"uri": "tiny", "name": "tiny-chat", "dtype": "float32"},
    "datasets": {"train": {"uri": "train.jsonl", "format": "messages"}, "maxLength": 128},
    "method": {"type": "sft", "sft": {"lossOn": "assistant"}},
    "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
    "hyperparameters": {"epochs": 1, "learningRate": 0.002, "batchSize": 16, "microBatchSize": 8, "warmupRatio": 0.05},
    "resources": {"gpusPerNode": 0, "precision": "fp32"},
    "evaluation": {"enabled": False},
    "serving": {"enabled": False},
}


@pytest.fixture(autouse=True)
def _quiet_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread per process (the machine is shared) and a reusable DeepSpeed op cache."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(1)


@pytest.fixture
def make_run(tmp_path: Path, tiny_model_dir: Path) -> MakeRun:
    """Write data and a resolved config, run the real prepare phase, return the config (saved as config.json)."""

    def make(spec: dict[str, Any] | None = None, train: Path | list[Any] | None = None, validation: Path | None = None) -> ResolvedConfig:
        train_path = train if isinstance(train, Path) else QUICKSTART / "train.jsonl"
        if isinstance(train, list):
            train_path = write_jsonl(tmp_path / "train.jsonl", train)
        full = merge(BASE_SPEC, spec or {})
        config = ResolvedConfig(
            job="t",
            runtime="local",
            spec=full,
            paths=ResolvedPaths(
                output=str(tmp_path / "out"),
                model=str(tiny_model_dir),
                train=str(train_path),
                validation=str(validation) if validation else None,
            ),
        )
        result = run_prepare(config)
        assert result.exit_code == 0, result.summary
        (tmp_path / "config.json").write_text(config.model_dump_json(by_alias=True))
        return config

    return make


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


def layout_of(config: ResolvedConfig) -> ArtifactLayout:
    return ArtifactLayout(config.paths.output)


def progress_events(config: ResolvedConfig) -> list[dict[str, Any]]:
    return [json.loads(line) for line in layout_of(config).progress_log.read_text().splitlines()]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(TORCH_EXTENSIONS), "DS_ACCELERATOR": "cpu"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return {**env, **extra}

"""Fixtures of the evaluation tests: LoRA adapters for the tiny model (trained, and never trained)
and resolved configs around the quickstart manifest that point at them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import yaml

from finetune_api.job import FineTuneJob
from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_cli.local.config import local_config
from tests.unit.trainer.adapters import train_adapter
from tests.unit.trainer.adapters import untrained_adapter as make_untrained_adapter

ROOT = Path(__file__).resolve().parents[4]
MANIFEST = ROOT / "examples" / "quickstart.yaml"
QUICKSTART = ROOT / "examples" / "data" / "quickstart"
MakeConfig = Callable[..., ResolvedConfig]


@pytest.fixture(scope="session")
def lora_only_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA-only adapter after one epoch (vLLM serves it); its answers differ from the base's."""
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter-lora-only"), 1)


@pytest.fixture(scope="session")
def untrained_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter after zero training steps: peft initialises B to 0, so it equals the base."""
    return make_untrained_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter-untrained") / "adapter")


@pytest.fixture
def make_config(tmp_path: Path, tiny_model_dir: Path) -> MakeConfig:
    """The quickstart's resolved config with its artifacts in tmp_path, the given adapter in place and
    `evaluation` overridden (camelCase keys, as in a manifest)."""

    def make(adapter: Path | None, evaluation: dict[str, Any] | None = None, **spec_overrides: Any) -> ResolvedConfig:
        manifest = yaml.safe_load(MANIFEST.read_text())
        manifest["spec"]["model"]["uri"] = str(tiny_model_dir)
        manifest["spec"]["evaluation"].update(evaluation or {})
        manifest["spec"].update(spec_overrides)
        config = local_config(FineTuneJob.model_validate(manifest), MANIFEST, tmp_path)
        if adapter is not None:
            shutil.copytree(adapter, ArtifactLayout(config.paths.output).adapter)
        return config

    return make


def read_report(config: ResolvedConfig) -> dict[str, Any]:
    return json.loads(ArtifactLayout(config.paths.output).eval_report.read_text())

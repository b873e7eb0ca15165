"""Shared fixtures of the trainer tests: the tiny chat model, built once per session (or reused), and
a LoRA adapter trained on the quickstart task."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_trainer.tiny_model import build_tiny_model, is_built
from tests.unit.trainer.adapters import train_adapter

ROOT = Path(__file__).resolve().parents[3]
PREBUILT = ROOT / ".cache" / "models" / "tiny-chat"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pre-trained tiny chat model: the repo's cached copy when current, else built (~1 min)."""
    if is_built(PREBUILT):
        return PREBUILT
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="session")
def trained_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter from TRL SFT on the quickstart task with the quickstart's settings (about 30 s on
    CPU): it learns the keyword rule (exact match near 1 against the base's 0)."""
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter-trained"), 6)

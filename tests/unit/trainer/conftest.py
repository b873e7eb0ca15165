"""Shared fixtures of the trainer tests: the tiny chat model, built once per session (or reused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_trainer.tiny_model import build_tiny_model, is_built

PREBUILT = Path(__file__).resolve().parents[3] / ".cache" / "models" / "tiny-chat"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pre-trained tiny chat model: the repo's cached copy when current, else built (~1 min)."""
    if is_built(PREBUILT):
        return PREBUILT
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")

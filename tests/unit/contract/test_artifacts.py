"""Artifact digests: the documented `sha256sum` recipe gives the same digest as the trainer."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from finetune_api.contract.artifacts import artifact_ref, tree_digest

pytestmark = pytest.mark.unit


def weights(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 100)
    (root / "adapter_config.json").write_text('{"r": 16}')
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_the_digest_is_the_sha256sum_recipe(tmp_path: Path) -> None:
    root = weights(tmp_path / "adapter")
    # `find . -type f | LC_ALL=C sort | xargs sha256sum`, stage by stage (argv lists, no shell)
    found = subprocess.run(["find", ".", "-type", "f"], cwd=root, capture_output=True, text=True, check=True).stdout
    ordered = subprocess.run(["sort"], input=found, env={**os.environ, "LC_ALL": "C"}, capture_output=True, text=True,
                             check=True).stdout
    recipe = subprocess.run(["xargs", "sha256sum"], input=ordered, cwd=root, capture_output=True, text=True,
                            check=True).stdout
    assert tree_digest(root) == "sha256:" + hashlib.sha256(recipe.encode()).hexdigest()


def test_the_digest_follows_the_content(tmp_path: Path) -> None:
    root = weights(tmp_path / "adapter")
    before = tree_digest(root)
    (root / "adapter_config.json").write_text('{"r": 8}')
    assert tree_digest(root) != before


def test_a_reference_is_relative_to_the_output_root(tmp_path: Path) -> None:
    root = weights(tmp_path / "out" / "adapter")
    ref = artifact_ref(tmp_path / "out", root, with_digest=True)
    assert ref.path == "adapter" and ref.digest == tree_digest(root)
    assert ref.under("pvc://artifacts/team/job") == "pvc://artifacts/team/job/adapter"
    assert artifact_ref(tmp_path / "out", tmp_path / "out" / "eval" / "report.json").digest is None

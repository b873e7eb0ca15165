"""The upload step's pure parts: which files of a finished run go to the output, and under which keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_api.contract.upload import object_key
from finetune_trainer.upload import artifact_files

pytestmark = pytest.mark.unit


def test_a_file_has_the_same_key_on_every_attempt() -> None:
    assert object_key("runs/demo", "adapter/adapter_model.safetensors") == "runs/demo/adapter/adapter_model.safetensors"
    assert object_key("runs/demo/", "run.json") == object_key("runs/demo", "run.json") == "runs/demo/run.json"
    assert object_key("", "run.json") == "run.json"


def test_only_the_final_artifacts_are_uploaded_run_json_last(tmp_path: Path) -> None:
    for name in ("merged/model.safetensors", "adapter/adapter_config.json", "eval/report.json", "eval/outputs.jsonl",
                 "data/report.json", "data/prepared.json", "checkpoints/checkpoint-2/optimizer.pt",
                 "tensorboard/events", "progress.jsonl", "run.json", "sources.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in artifact_files(tmp_path)] == [
        "adapter/adapter_config.json", "merged/model.safetensors", "eval/outputs.jsonl", "eval/report.json",
        "data/report.json", "run.json"]

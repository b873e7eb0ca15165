"""A finished phase is recognised by its record and checked outputs, never by its record alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_cli.local.config import local_config
from finetune_cli.local.resume import PhaseRecords
from finetune_cli.manifests import load_job

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "examples" / "quickstart.yaml"


def records_for(workdir: Path, **serving: object) -> PhaseRecords:
    job = load_job(MANIFEST)
    job.spec.serving = job.spec.serving.model_copy(update=serving)
    return PhaseRecords(workdir, local_config(job, MANIFEST, workdir))


def message(phase: str) -> str:
    return json.dumps({"phase": phase, "ok": True})


@pytest.fixture
def finished(tmp_path: Path) -> PhaseRecords:
    """Outputs as the phases leave them, and a record for each."""
    artifacts = tmp_path / "artifacts"
    (artifacts / "data" / "abc" / "train").mkdir(parents=True)
    (artifacts / "data" / "abc" / "train" / "data.arrow").write_bytes(b"arrow")
    (artifacts / "data" / "prepared.json").write_text(json.dumps({"dir": "abc"}))
    (artifacts / "data" / "report.json").write_text(json.dumps({"ok": True}))
    (artifacts / "eval").mkdir()
    (artifacts / "eval" / "base-outputs.json").write_text("{}")
    (artifacts / "adapter").mkdir()
    (artifacts / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (artifacts / "run.json").write_text("{}")
    (artifacts / "eval" / "report.json").write_text(json.dumps({"passed": True}))
    records = records_for(tmp_path)
    for phase in ("prepare", "baseline", "train", "evaluate"):
        records.record(phase, message(phase))
    return records


def test_a_recorded_phase_with_intact_outputs_is_finished(finished: PhaseRecords) -> None:
    for phase in ("prepare", "baseline", "train", "evaluate"):
        assert finished.finished(phase) == message(phase)
    assert finished.finished("merge") is None  # never ran


@pytest.mark.parametrize("damage", ["truncate", "delete", "add"])
def test_a_damaged_output_means_the_phase_runs_again(finished: PhaseRecords, damage: str) -> None:
    artifacts = finished.workdir / "artifacts"
    if damage == "truncate":
        (artifacts / "adapter" / "adapter_model.safetensors").write_bytes(b"weig")
    elif damage == "delete":
        (artifacts / "adapter" / "adapter_model.safetensors").unlink()
    else:
        (artifacts / "adapter" / "stray.bin").write_bytes(b"?")
    assert finished.finished("train") is None
    assert finished.finished("prepare") is not None


def test_map_caches_next_to_the_prepared_data_are_not_outputs(finished: PhaseRecords) -> None:
    (finished.workdir / "artifacts" / "data" / "abc" / "train" / "cache-0123.arrow").write_bytes(b"cache")
    assert finished.finished("prepare") is not None


def test_a_corrupt_record_is_not_trusted(finished: PhaseRecords) -> None:
    finished.path("evaluate").write_text("{not json")
    assert finished.finished("evaluate") is None


def test_changed_data_runs_prepare_again(finished: PhaseRecords, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    config = finished.config.model_copy(update={"paths": finished.config.paths.model_copy(update={"train": str(data)})})
    records = PhaseRecords(finished.workdir, config)
    assert records.finished("prepare") is None


def test_the_config_decides_but_not_the_serving_placement_nor_the_workdir(finished: PhaseRecords, tmp_path: Path) -> None:
    assert records_for(tmp_path, replicas=3).finished("train") == message("train")
    assert records_for(tmp_path, max_model_len=1280).finished("prepare") is None  # prepare checks it against the model
    job = load_job(MANIFEST)
    job.spec.hyperparameters.epochs = 1
    assert PhaseRecords(tmp_path, local_config(job, MANIFEST, tmp_path)).finished("train") is None
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    finished.workdir.rename(moved)
    assert records_for(moved).finished("evaluate") == message("evaluate")


def test_running_a_phase_again_drops_the_later_records(finished: PhaseRecords) -> None:
    finished.forget_from("baseline")
    assert finished.finished("prepare") is not None
    assert all(finished.finished(p) is None for p in ("baseline", "train", "evaluate"))

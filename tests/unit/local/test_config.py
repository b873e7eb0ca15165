"""The local runtime reads the same manifest as the cluster and says what it cannot apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finetune_cli.manifests import load_job
from finetune_cli.local.config import inapplicable_fields, local_config, local_path

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_relative_paths_resolve_against_the_manifest(tmp_path: Path) -> None:
    manifest = ROOT / "examples/quickstart.yaml"
    config = local_config(load_job(manifest), manifest, tmp_path / "run")
    assert config.paths.train == str((ROOT / "examples/data/quickstart/train.jsonl").resolve())
    assert config.paths.model == str((ROOT / ".cache/models/tiny-chat").resolve())
    assert config.paths.output == str((tmp_path / "run/artifacts").resolve())
    assert config.runtime == "local" and config.served_model_name == "quickstart"


def test_remote_uris_are_kept_and_file_uris_never_reach_the_mapping() -> None:
    assert local_path("s3://bucket/x.jsonl", Path("/tmp")) == "s3://bucket/x.jsonl"
    with pytest.raises(ValueError, match=r"spec\.datasets\.train\.uri"):  # refused by the loader ftctl run uses
        load_job(ROOT / "tests/manifests/invalid/file-uri.yaml")
    assert local_path("/abs/x", Path("/tmp")) == "/abs/x"


def test_quickstart_applies_fully_on_a_cpu_machine() -> None:
    assert inapplicable_fields(load_job(ROOT / "examples/quickstart.yaml"), gpus_available=0) == []


def test_cluster_fields_are_reported_once_each() -> None:
    notes = inapplicable_fields(load_job(ROOT / "examples/multinode-zero3.yaml"), gpus_available=0)
    text = "\n".join(notes)
    assert "spec.resources.nodes=4" in text
    assert "gpusPerNode=8" in text and "CPU" in text
    assert "nodeSelector/tolerations" in text
    assert "spec.queue (gpu-h100)" in text
    assert len(notes) == len(set(notes))


def test_a_machine_without_a_gpu_driver_counts_no_gpu_without_importing_torch(tmp_path: Path) -> None:
    code = ("import sys; from finetune_cli.local.run import gpus_available; "
            f"print(gpus_available(({str(tmp_path / 'nvidiactl')!r},)), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "False"]

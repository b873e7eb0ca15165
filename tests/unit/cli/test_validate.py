"""`ftctl validate`: the same verdict the API server gives, offline, naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finetune_cli.main import main
from finetune_cli.manifests import load_job

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
INVALID = sorted((ROOT / "tests/manifests/invalid").glob("*.yaml"))


def expected_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            return line[len("# expect: ") :]
    raise AssertionError(f"{path} has no '# expect:' line")


def expected_message(path: Path) -> str:
    """The `# message:` fragment both the API server and `ftctl validate` say (empty when not declared)."""
    for line in path.read_text().splitlines():
        if line.startswith("# message: "):
            return line[len("# message: ") :]
    return ""


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 60


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_refused_naming_the_field(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if f": {expected_field(path)}" in line]
    assert lines, err
    assert any(expected_message(path) in line for line in lines), err
    assert "Traceback" not in err


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, sorted((ROOT / "examples").glob("*.yaml")))]) == 0
    assert "valid" in capsys.readouterr().out


def test_yaml_errors_and_missing_files_are_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert main(["validate", str(broken), str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "cannot read" in err


def test_wrong_kind_and_api_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "x.yaml"
    doc.write_text("apiVersion: finetune.dev/v1alpha1\nkind: TrainJob\nmetadata: {name: x}\n---\napiVersion: v1\nkind: FineTuneJob\n")
    assert main(["validate", str(doc)]) == 2
    err = capsys.readouterr().err
    assert "kind: must be one of" in err and "apiVersion: must be finetune.dev/v1alpha1" in err


def test_console_script_exit_code_without_traceback(tmp_path: Path) -> None:
    bad = INVALID[0]
    proc = subprocess.run([sys.executable, "-m", "finetune_cli.main", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.strip()


def test_ftctl_run_loader_refuses_a_lora_rank_vllm_cannot_serve_in_adapter_mode(tmp_path: Path) -> None:
    """`ftctl run` loads through the admission rules, so the trainer needs no rank check of its own."""
    manifest = (ROOT / "tests/manifests/invalid/adapter-rank-over-vllm-max.yaml").read_text()
    adapter = tmp_path / "adapter.yaml"
    adapter.write_text(manifest)
    with pytest.raises(ValueError, match=r"spec\.adapter\.r: vLLM serves LoRA ranks up to 512"):
        load_job(adapter)
    merged = tmp_path / "merged.yaml"
    merged.write_text(manifest + "  serving:\n    mode: merged\n")
    assert load_job(merged).spec.adapter.r == 1024

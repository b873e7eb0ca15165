"""An unset `serving.mode` follows the adapter type: a full fine-tune (no adapter) is served merged.

Found by the model zoo: `adapter: {type: full}` alone was refused at admission ("serving.mode adapter
needs an adapter") because the mode defaulted to `adapter` whatever the adapter type. The CEL rules
(offline here, on the real API server through examples/full-finetune.yaml in the admission corpus) and
the models read the unset mode the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_api import FineTuneJob
from finetune_cli.main import main

pytestmark = pytest.mark.unit


def manifest(adapter: str, mode: str | None) -> str:
    serving = f"  serving: {{mode: {mode}}}\n" if mode else ""
    return (
        "apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: tuned}\nspec:\n"
        "  model: {uri: pvc://models/base}\n  datasets: {train: {uri: pvc://data/train.jsonl}}\n"
        f"  adapter: {{type: {adapter}}}\n" + serving
    )


@pytest.mark.parametrize(("adapter", "mode"), [("full", "merged"), ("lora", "adapter"), ("qlora", "adapter")])
def test_unset_mode_follows_the_adapter_type(adapter: str, mode: str, tmp_path: Path) -> None:
    import yaml

    job = FineTuneJob.model_validate(yaml.safe_load(manifest(adapter, None)))
    assert job.spec.serving.mode == mode
    path = tmp_path / "job.yaml"
    path.write_text(manifest(adapter, None))
    assert main(["validate", "-q", str(path)]) == 0


def test_a_full_fine_tune_served_as_an_adapter_is_still_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(manifest("full", "adapter"))
    assert main(["validate", "-q", str(path)]) == 2
    assert "spec.serving.mode: serving.mode adapter needs an adapter" in capsys.readouterr().err

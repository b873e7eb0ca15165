"""`finetune.dev/local-bootstrap` names the tiny model `ftctl run` builds when the model is missing:
the quickstart's `tiny-chat` or a zoo model; any other name ends the run at once, naming the annotation."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from finetune_cli.local.run import EXIT_USER, run_job

pytestmark = pytest.mark.unit


def test_an_unknown_bootstrap_name_is_a_user_error_naming_the_annotation(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\n"
        "metadata: {name: j, annotations: {finetune.dev/local-bootstrap: zoo-falcon}}\n"
        "spec:\n  model: {uri: model}\n  datasets: {train: {uri: train.jsonl}}\n"
    )
    out = StringIO()
    code = run_job(manifest, workdir=tmp_path / "run", plain=True, console=Console(file=out, width=300))
    assert code == EXIT_USER
    text = out.getvalue()
    assert "metadata.annotations[finetune.dev/local-bootstrap]: unknown tiny model 'zoo-falcon'" in text
    assert "zoo-gemma" in text and "Traceback" not in text
    assert not (tmp_path / "model").exists()

"""`ftctl run` of a stock manifest on a base model with fewer positions than the default maxLength.

Issue 14's story: a user's season-classification data, a manifest that names only the model and the
data (LoRA served in adapter mode, every length left to its default). The tiny chat model has 512
positions, the default maxLength is 1024 and the old default `--max-model-len` 1280: training passed
its gate, then vLLM refused to start. Now the Validating phase lowers the defaults to what the model
and the data need, and the whole pipeline ends with a served model that answers — real trainer, real
vLLM CPU server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.seasons import write_seasons

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / ".cache" / "models" / "tiny-chat"


def test_stock_manifest_on_a_short_context_model_is_served(tmp_path: Path) -> None:
    train, held_out = write_seasons(tmp_path / "data")
    manifest = tmp_path / "seasons.yaml"
    manifest.write_text(
        "apiVersion: finetune.dev/v1alpha1\n"
        "kind: FineTuneJob\n"
        "metadata:\n"
        "  name: seasons\n"
        "  annotations: {finetune.dev/local-bootstrap: tiny-chat}\n"  # build the tiny model if missing
        "spec:\n"
        f"  model: {{uri: {TINY_MODEL}}}\n"
        "  datasets:\n"
        f"    train: {{uri: {train}}}\n"
        f"    eval: {{uri: {held_out}}}\n"
    )
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_cli.main", "run", str(manifest), "--workdir", str(workdir), "--plain"],
        capture_output=True, text=True, timeout=1500, cwd=REPO, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ftctl run exited {proc.returncode}:\n{output[-6000:]}"
    assert json.loads((TINY_MODEL / "config.json").read_text())["max_position_embeddings"] == 512

    data = json.loads((workdir / "artifacts" / "data" / "report.json").read_text())
    assert data["model"]["positions"] == 512 and data["model"]["max_length"] == 512
    assert data["model"]["max_model_len"] == 256 >= data["model"]["longest_example"] + 64
    assert any(f["rule"] == "FT021" and f["severity"] == "warning" for f in data["findings"])

    # the served vLLM got the derived length, came up and answered a held-out prompt
    argv = (workdir / "artifacts" / "logs" / "vllm.log").read_text().splitlines()[0].split()
    assert argv[argv.index("--max-model-len") + 1] == "256" and "--enable-lora" in argv
    served = [line for line in output.splitlines() if line.startswith("served at ")]
    assert served, output[-3000:]
    report = (workdir / "report.md").read_text()
    assert "| serve |" in report and "answered |" in report
    assert "- maxLength: 512" in report and "- maxModelLen: 256" in report

"""The model zoo through `ftctl run` (issue 15, item 4): real architectures on stock manifests.

Each cell is one `ftctl run` of a manifest that sets nothing but the model and the data (plus the
one field the cell is about: `serving.mode` or `adapter.type`): prepare → baseline → train a few
steps → [merge] → evaluate → serve on a real vLLM CPU server → one chat request. Whatever a
default gets wrong on an architecture fails its cell. docs/zoo.md has each cell's result.

Cost (CI budget): the whole matrix, eleven cells, runs in the e2e tier; each costs about a minute
on a quiet machine, a third of it the vLLM start (one server per cell).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from finetune_trainer.zoo import ZOO, build_zoo_model
from tests.harness.processes import MARKER_ENV, cmdline, kill_all, wait_until_gone
from tests.harness.seasons import write_seasons

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("FT_CACHE_DIR", REPO / ".cache")) / "models"

CELLS: list[tuple[str, str]] = [
    ("zoo-llama", "adapter"),
    ("zoo-llama", "qlora"),
    ("zoo-qwen2", "adapter"),
    ("zoo-qwen2", "qlora"),
    ("zoo-mistral", "adapter"),
    ("zoo-mistral", "full"),
    ("zoo-gemma", "adapter"),
    ("zoo-gemma", "merged"),
    ("zoo-gemma", "full"),
    ("zoo-phi3", "adapter"),
    ("zoo-phi3", "merged"),
]
"""(model, what the manifest sets besides model and data; `adapter` sets nothing else): LoRA served as
an adapter on every family, merged on the two with a tied head or fused projections (Gemma, Phi-3),
QLoRA (Llama 3, Qwen2) and a full fine-tune (Mistral, Gemma) on two each."""

EXTRA = {
    "adapter": "",
    "merged": "  serving: {mode: merged}\n",
    "qlora": "  adapter: {type: qlora}\n",
    "full": "  adapter: {type: full}\n",
}


@pytest.fixture(scope="module")
def seasons_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small user dataset (not the quickstart's): 48 training and 12 held-out chats."""
    return write_seasons(tmp_path_factory.mktemp("seasons"), train=48, eval_rows=12)


def stock_manifest(path: Path, name: str, model: Path, data: tuple[Path, Path], extra: str) -> Path:
    path.write_text(
        "apiVersion: finetune.dev/v1alpha1\n"
        "kind: FineTuneJob\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  model: {{uri: {model}}}\n"
        f"  datasets: {{train: {{uri: {data[0]}}}, eval: {{uri: {data[1]}}}}}\n"
        + extra
    )
    return path


@pytest.mark.parametrize(("model", "cell"), [pytest.param(m, c, id=f"{m}-{c}") for m, c in CELLS])
def test_stock_manifest_trains_evaluates_and_serves(model: str, cell: str, seasons_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = build_zoo_model(model, MODELS / model)
    # the job is named like the model, as a stock manifest would be: the base is served as `<name>-base`
    manifest = stock_manifest(tmp_path / "job.yaml", model, model_dir, seasons_data, EXTRA[cell])
    workdir = tmp_path / "run"
    marker = uuid.uuid4().hex  # in the environment of every process the run starts, re-parented or not
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_cli.main", "run", str(manifest), "--workdir", str(workdir), "--plain", "--processes", "1"],
        capture_output=True, text=True, timeout=900, cwd=REPO, check=False, env={**os.environ, MARKER_ENV: marker},
    )
    output = proc.stdout + proc.stderr
    left = wait_until_gone(set(), marker, timeout=30)
    kill_all(left)
    assert not left, f"left running after ftctl run exited: {[cmdline(p) for p in left]}"
    assert proc.returncode == 0, f"ftctl run exited {proc.returncode}:\n{output[-6000:]}"
    assert "verdict: PASSED" in output

    artifacts = workdir / "artifacts"
    data = json.loads((artifacts / "data" / "report.json").read_text())
    positions = ZOO[model].positions
    assert data["model"]["positions"] == positions
    assert data["model"]["max_length"] == min(positions, 1024)
    assert not [f for f in data["findings"] if f["severity"] == "error"]

    losses = [e["loss"] for e in map(json.loads, (artifacts / "progress.jsonl").read_text().splitlines()) if e.get("loss") is not None]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses  # it trained (from ~ln(vocab), far from any target)

    weights = {"adapter": "adapter", "qlora": "adapter", "merged": "merged", "full": "model"}[cell]
    config = json.loads((artifacts / weights / ("adapter_config.json" if weights == "adapter" else "config.json")).read_text())
    if weights == "adapter":
        assert config["base_model_name_or_path"] == f"{model}-base"
    else:  # what vLLM loads keeps the family's tied or untied head
        assert config["tie_word_embeddings"] is ZOO[model].tie_embeddings

    argv = (artifacts / "logs" / "vllm.log").read_text().splitlines()[0].split()
    assert argv[argv.index("--max-model-len") + 1] == str(data["model"]["max_model_len"])
    assert ("--enable-lora" in argv) == (weights == "adapter")
    served = [line for line in output.splitlines() if line.startswith("served at ")]
    assert served, output[-3000:]

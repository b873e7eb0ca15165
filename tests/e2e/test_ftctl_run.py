"""The README's main command, end to end: `ftctl run examples/quickstart.yaml` on this machine.

Real everything: the tiny model is built offline (or reused), the data checked, the base evaluated,
two training processes, the tuned adapter evaluated and gated, a real vLLM CPU server started and
asked one question, and the report written. The run is recorded in a real MLflow server (started here,
like the other test services) and read back with MLflow's own client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_trainer.tiny_model import LABELS
from tests.harness.mlflow import MlflowServer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


def tracked_quickstart(out: Path, tracking_uri: str) -> Path:
    """The quickstart manifest with its paths made absolute and the run tracked in MLflow; its data
    as a user's own would be: the training set a Parquet file whose chat column is `conversation`
    (mapped by `columns`), the eval set the `test` split of a DatasetDict saved with `save_to_disk`."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    examples = REPO / "examples"
    doc = yaml.safe_load((examples / "quickstart.yaml").read_text())
    spec = doc["spec"]
    spec["model"]["uri"] = str((examples / spec["model"]["uri"]).resolve())
    spec["datasets"]["validation"]["uri"] = str(examples / spec["datasets"]["validation"]["uri"])
    rows = {split: [json.loads(line) for line in (examples / spec["datasets"][split]["uri"]).read_text().splitlines()]
            for split in ("train", "eval")}
    pq.write_table(pa.Table.from_pylist([{"conversation": r["messages"]} for r in rows["train"]]), out.parent / "train.parquet")
    spec["datasets"]["train"] = {"uri": str(out.parent / "train.parquet"), "columns": {"messages": "conversation"}}
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows["eval"])}).save_to_disk(str(out.parent / "support-tickets"))
    spec["datasets"]["eval"] = {"uri": str(out.parent / "support-tickets"), "fileFormat": "saved_dataset", "split": "test"}
    spec["tracking"] = {"mlflow": {"uri": tracking_uri, "experiment": "e2e-quickstart"}}
    out.write_text(yaml.safe_dump(doc))
    return out


def test_quickstart_passes_its_gate_serves_an_answer_and_is_recorded_in_mlflow(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    workdir = tmp_path / "quickstart"
    manifest = tracked_quickstart(tmp_path / "quickstart.yaml", mlflow_server.uri)
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_cli.main", "run", str(manifest),
         "--workdir", str(workdir), "--plain"],
        capture_output=True, text=True, timeout=1200, cwd=REPO,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ftctl run exited {proc.returncode}:\n{output[-6000:]}"
    assert "verdict: PASSED" in output

    data = json.loads((workdir / "artifacts" / "data" / "report.json").read_text())
    assert data["splits"]["train"]["files"] == [str(tmp_path / "train.parquet")] and data["splits"]["train"]["examples"] == 400
    assert data["splits"]["eval"]["files"] == [str(tmp_path / "support-tickets" / "test")] and data["splits"]["eval"]["examples"] == 60

    report = (workdir / "report.md").read_text()
    assert report.startswith("# FineTuneJob `quickstart` — PASSED")
    for phase in ("prepare", "baseline", "train", "evaluate", "serve"):
        assert f"| {phase} |" in report, f"phase {phase} missing from the report"
    for plot in ("loss.png", "metrics.png"):
        assert (workdir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot

    evaluation = json.loads((workdir / "artifacts" / "eval" / "report.json").read_text())
    exact = next(m for m in evaluation["metrics"] if m["name"] == "exact_match")
    assert evaluation["passed"] is True
    assert exact["tuned"] >= 0.8 and exact["tuned"] - exact["base"] >= 0.5, exact

    served = [line for line in output.splitlines() if line.startswith("served at ")]
    assert served, output[-3000:]
    answer = served[-1].split("answer: ", 1)[1].strip("'\"")
    assert answer in LABELS, f"the served tuned model answered {answer!r}, not a class"

    run = mlflow_server.read_run("e2e-quickstart", "quickstart-g1", "eval/report.json")
    assert run["status"] == "FINISHED"
    assert run["params"]["method.type"] == "sft" and run["params"]["hyperparameters.learningRate"] == "0.003"
    assert run["params"]["adapter.r"] == "16"
    steps = [step for step, _ in run["history"]["train/loss"]]
    assert len(steps) > 5 and steps == sorted(steps)
    assert run["history"]["train/eval_loss"], "the validation-loss curve was not recorded"
    assert run["metrics"]["eval/held-out/exact_match/tuned"] == exact["tuned"]
    assert run["metrics"]["gate/held-out/exact_match"] == 1.0 and run["metrics"]["eval/passed"] == 1.0
    assert {"eval/report.json", "eval/report.md", "data/report.json"} <= set(run["artifacts"])
    assert run["tensorboard"], "no TensorBoard event files were uploaded"
    assert run["artifact"] == evaluation  # MLflow's copy of the evaluation report is the run's own
    events = list((workdir / "artifacts" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files in the artifacts"

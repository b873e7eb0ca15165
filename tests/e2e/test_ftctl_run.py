"""The README's main command, end to end: `ftctl run examples/quickstart.yaml` on this machine.

Real everything: the tiny model is built offline (or reused), the data checked, the base evaluated,
two training processes, the tuned adapter evaluated and gated, a real vLLM CPU server started and
asked one question, and the report written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_trainer.tiny_model import LABELS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_passes_its_gate_and_serves_an_answer(tmp_path: Path) -> None:
    workdir = tmp_path / "quickstart"
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_cli.main", "run", str(REPO / "examples" / "quickstart.yaml"),
         "--workdir", str(workdir), "--plain"],
        capture_output=True, text=True, timeout=1200, cwd=REPO,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ftctl run exited {proc.returncode}:\n{output[-6000:]}"
    assert "verdict: PASSED" in output

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

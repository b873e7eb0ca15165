"""Benchmark: wall time of the README's quickstart (issue 8), by phase; aim ≤ 6 minutes on 2 cores.

Builds the tiny model from scratch into a temporary directory (the one-off cost of a fresh machine),
then runs `ftctl run examples/quickstart.yaml --fresh` (which reuses the model cached under
.cache/models) and reads the phase timings from its report. Prints one JSON object:
  tiny_model_build_s   building the pre-trained tiny model (first run only)
  phases               {prepare, baseline, train, evaluate, serve: seconds}
  run_s                `ftctl run` wall time (model already built)
  total_fresh_machine_s  tiny_model_build_s + run_s
  exit_code, verdict, load_1m

Usage: .venv/bin/python bench/quickstart.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from finetune_trainer.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        build_tiny_model(Path(scratch) / "tiny-chat")
        build_s = time.perf_counter() - started
        build_tiny_model(ROOT / ".cache" / "models" / "tiny-chat")

        workdir = Path(scratch) / "run"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "finetune_cli.main", "run", str(ROOT / "examples" / "quickstart.yaml"),
             "--fresh", "--plain", "--workdir", str(workdir)],
            capture_output=True, text=True, cwd=ROOT,
        )
        run_s = time.perf_counter() - started
        report = (workdir / "report.md").read_text() if (workdir / "report.md").exists() else ""
    section = report.split("## Phases", 1)[-1].split("\n## ", 1)[0]
    phases = {m[1]: float(m[2]) for m in re.finditer(r"^\| (\w+) \| ([\d.]+) \| ", section, re.M)}
    verdict = re.search(r"— (PASSED|REJECTED)", report)
    print(json.dumps({
        "tiny_model_build_s": round(build_s, 1),
        "phases": phases,
        "run_s": round(run_s, 1),
        "total_fresh_machine_s": round(build_s + run_s, 1),
        "exit_code": proc.returncode,
        "verdict": verdict.group(1) if verdict else None,
        "load_1m": os.getloadavg()[0],
    }, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

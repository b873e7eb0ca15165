"""Benchmark: start time of the test control plane (docs/controlplane.md).

Prints one JSON object:
  cold_build_s       time of scripts/build-controlplane.sh --force with the caches as they are
                     (only with --cold; with an empty GOCACHE this is the true cold build)
  build_check_s      time of the idempotent build step when everything is cached
  warm_start_s       mean over --runs of: process start -> /readyz ok (apiserver_ready_s) and
                     -> all kwok GPU nodes Ready + default ServiceAccount (nodes_ready_s)
  runner_ready_s     (with --runner) local pod runner started -> node local-runner Ready
Target: warm_start_s < 20.

Usage: .venv/bin/python bench/controlplane_start.py [--runs 3] [--cold] [--runner]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import cluster as cp  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also time a forced rebuild of all three binaries")
    ap.add_argument("--runner", action="store_true", help="also time the local pod runner's node registration")
    args = ap.parse_args()

    result: dict = {
        "benchmark": "controlplane_start",
        "kubernetes": cp.KUBERNETES_VERSION,
        "kwok": cp.KWOK_VERSION,
        "helm": cp.HELM_VERSION,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "target_warm_start_s": 20,
    }
    script = cp.REPO / "scripts" / "build-controlplane.sh"
    if args.cold:
        t = time.monotonic()
        subprocess.run(["bash", str(script), "--force"], check=True, capture_output=True)
        result["cold_build_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    cp.build()
    result["build_check_s"] = round(time.monotonic() - t, 2)

    runs = []
    for _ in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="ft-cp-bench-"))
        try:
            t = time.monotonic()
            c = cp.start_cluster(work, do_build=False, apply_crds_dir=None)  # infra only: CRDs are the tests' business
            run = {k: round(v, 2) for k, v in c.timings.items() if k != "build_check_s"}
            run["wall_s"] = round(time.monotonic() - t, 2)
            if args.runner:
                from tests.harness.podrunner import LocalRunnerProcess

                t = time.monotonic()
                r = LocalRunnerProcess.start(c, work / "runner")
                run["runner_ready_s"] = round(time.monotonic() - t, 2)
                r.stop()
            t = time.monotonic()
            c.stop()
            run["stop_s"] = round(time.monotonic() - t, 2)
            runs.append(run)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    result["runs"] = runs
    for key in ("apiserver_ready_s", "nodes_ready_s", "total_start_s", "runner_ready_s", "stop_s"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            result[key.replace("_s", "_mean_s") if key != "total_start_s" else "warm_start_s"] = round(
                statistics.mean(vals), 2)
    result["warm_start_ok"] = result.get("warm_start_s", 1e9) < 20
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

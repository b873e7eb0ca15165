"""Benchmark: `ftctl validate` over 1,000 manifests, import time included (issue 2; aim < 2 s).

Prints one JSON object. The manifests are the examples with distinct names, written to a temp dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main(count: int = 1000, repeats: int = 3) -> dict[str, float]:
    examples = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(count):
            doc = dict(examples[i % len(examples)])
            doc["metadata"] = {**doc["metadata"], "name": f"job-{i}"}
            output = (doc.get("spec") or {}).get("output") or {}
            if output.get("uri"):  # a job's output directory ends with its name (admission rule)
                doc["spec"] = {**doc["spec"], "output": {**output, "uri": output["uri"].rsplit("/", 1)[0] + f"/job-{i}"}}
            path = Path(tmp) / f"m{i}.yaml"
            path.write_text(yaml.safe_dump(doc))
            files.append(str(path))
        cmd = [sys.executable, "-m", "finetune_cli.main", "validate", "-q", *files]
        import_only = [sys.executable, "-c", "import finetune_cli.main"]
        timings, imports = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            timings.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(import_only, check=True)
            imports.append(time.perf_counter() - start)
    result = {
        "benchmark": "ftctl_validate",
        "manifests": count,
        "seconds_best": round(min(timings), 3),
        "seconds_median": round(sorted(timings)[len(timings) // 2], 3),
        "interpreter_and_import_seconds_best": round(min(imports), 3),
        "manifests_per_second": round(count / min(timings), 1),
        "target_seconds": 2.0,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

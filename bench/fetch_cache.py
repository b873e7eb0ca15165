"""Time to first training step with a cold and a warm source cache, for a model in S3 (SeaweedFS).

Seeds the tiny chat model into a private bucket, then runs `ftctl run --no-serve` twice on a manifest
that names `s3://…/tiny-chat` with a fresh source cache, and prints, per run, the seconds from the start of
`ftctl run` to the trainer's first progress line and the bytes the store sent (its own counter): the
warm run reads nothing from the store.

Usage: python bench/fetch_cache.py   (needs .cache/bin/weed: scripts/build-controlplane.sh)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.objectstore import ObjectStore  # noqa: E402
from finetune_api.contract.sources import credential_env  # noqa: E402
from finetune_trainer.tiny_model import build_tiny_model, is_built  # noqa: E402

BUCKET = "bench-models"
MANIFEST = """apiVersion: finetune.dev/v1alpha1
kind: FineTuneJob
metadata: {{name: {name}}}
spec:
  model: {{uri: "s3://{bucket}/tiny-chat", secretRef: {{name: bench}}}}
  datasets:
    train: {{uri: "{data}"}}
    maxLength: 128
  hyperparameters: {{maxSteps: 2, batchSize: 2}}
  evaluation: {{enabled: false}}
  serving: {{enabled: false}}
"""


def run_until_first_step(argv: list[str], env: dict[str, str], progress: Path, log: Path) -> float | None:
    """Run `ftctl run` until the trainer logs its first step (progress.jsonl appears); those seconds."""
    started = time.monotonic()
    first: float | None = None
    with log.open("w") as out, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env) as proc:
        while proc.poll() is None:
            if first is None and progress.is_file() and progress.stat().st_size:
                first = time.monotonic() - started
                proc.terminate()  # ftctl stops its phase cleanly: the rest of the run is not measured
            time.sleep(0.2)
    return first


def main() -> int:
    tiny = REPO / ".cache" / "models" / "tiny-chat"
    if not is_built(tiny):
        build_tiny_model(tiny)
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        root = Path(tmp)
        store = ObjectStore(root / "store", (BUCKET,)).start()
        try:
            store.put_tree(BUCKET, "tiny-chat", tiny)
            data = REPO / "examples" / "data" / "quickstart" / "train.jsonl"
            env = {**os.environ, "FT_SOURCE_CACHE": str(root / "cache"),
                   **{credential_env("model", k): v for k, v in store.reader.env(store.endpoint).items()}}  # type: ignore[arg-type]
            for label in ("cold", "warm"):
                name = f"bench-{label}"
                manifest = root / f"{name}.yaml"
                manifest.write_text(MANIFEST.format(name=name, bucket=BUCKET, data=data))
                before = store.sent_bytes(BUCKET)
                argv = [sys.executable, "-m", "finetune_cli.main", "run", str(manifest), "--workdir", str(root / name),
                        "--no-serve", "--plain", "--processes", "1"]
                first = run_until_first_step(argv, env, root / name / "artifacts" / "progress.jsonl", root / f"{name}.log")
                fetch = json.loads((root / name / "artifacts" / "sources.json").read_text())["sources"][0]
                print(json.dumps({"cache": label, "first_training_step_s": round(first, 1) if first else None,
                                  "store_bytes_sent": store.sent_bytes(BUCKET) - before,
                                  "downloaded_bytes": fetch.get("downloadedBytes", 0)}))
        finally:
            store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

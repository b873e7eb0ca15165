"""A real MLflow tracking server for the tests, and MLflow's own client to read runs back.

`mlflow server` runs with a SQLite backend store and proxied artifacts, from its own virtualenv
(`.venv-mlflow`, made by scripts/install.sh): no MLflow release reachable here installs next to the
trainer's pins, and the trainer only speaks MLflow's REST API (finetune_trainer.tracking).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.cluster import wait_for
from tests.harness.processes import port_free

REPO = Path(__file__).resolve().parents[2]
MLFLOW_VENV = Path(os.environ.get("FT_MLFLOW_VENV", REPO / ".venv-mlflow"))

_READ_RUN = textwrap.dedent("""
    import json, sys, tempfile
    from mlflow import MlflowClient

    uri, experiment, run_name, artifact = sys.argv[1:5]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in ("train/loss", "train/eval_loss")}
    files = [f.path for f in client.list_artifacts(run.info.run_id, "eval")]
    files += [f.path for f in client.list_artifacts(run.info.run_id, "data")]
    tensorboard = [f.path for f in client.list_artifacts(run.info.run_id, "tensorboard")]
    local = client.download_artifacts(run.info.run_id, artifact, tempfile.mkdtemp())
    print(json.dumps({
        "status": run.info.status, "params": run.data.params, "metrics": run.data.metrics,
        "history": history, "artifacts": files, "tensorboard": tensorboard,
        "artifact": json.load(open(local)),
    }))
""")


def _free_port() -> int:
    return next(p for p in range(5500, 5600) if port_free(p))


class MlflowServer:
    """`mlflow server` on a free local port until `stop()`; its log under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "mlflow-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        mlflow = MLFLOW_VENV / "bin" / "mlflow"
        if not mlflow.exists():
            raise RuntimeError(f"{mlflow} missing: run scripts/install.sh (it makes .venv-mlflow)")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                 "--artifacts-destination", str(self.workdir / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            )
        wait_for(self._healthy, timeout=timeout, interval=0.5, what=f"mlflow server on {self.uri} (log {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def read_run(self, experiment: str, run_name: str, artifact: str) -> dict[str, Any]:
        """A run as MLflow's client sees it: status, params, metrics, loss histories, artifact lists, and
        one artifact (JSON) downloaded."""
        proc = subprocess.run([str(MLFLOW_VENV / "bin" / "python"), "-c", _READ_RUN, self.uri, experiment, run_name, artifact],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"reading the run with MLflow's client failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

"""Record a finished evaluation in MLflow (`spec.tracking.mlflow`) over MLflow's REST API.

Why REST and not the `mlflow` package: every MLflow release reachable here conflicts with the
trainer's pins (mlflow 3.17 needs pyarrow < 26, mlflow-skinny 3.18 needs cachetools < 8, and
mlflow 3.18's own mlflow-tracing 3.18 is not published), and the REST API is MLflow's stable public
interface. The e2e test reads what this writes with MLflow's own client.

One run per evaluated generation: parameters (model, method, adapter, hyperparameters, evaluation
settings), the training and validation loss by step from `progress.jsonl`, every metric of every set
and slice, one 0/1 metric per gate, and the data report, evaluation report and TensorBoard event files
as artifacts (uploaded through the server's artifact proxy).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from finetune_api.contract.progress import read_events
from finetune_api.job import MlflowSpec
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

_BATCH = 900  # MLflow accepts at most 1000 metrics per log-batch
_PARAM_BATCH = 100
_PARAM_VALUE_LIMIT = 6000
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_ARTIFACT_PROXY = "mlflow-artifacts:/"


class TrackingError(RuntimeError):
    """The tracking server refused or could not be reached; the message names the call."""


class MlflowRest:
    """The few MLflow REST calls a run needs, with the server's error message on failure."""

    def __init__(self, uri: str, timeout: float = 30.0) -> None:
        self.base = uri.rstrip("/")
        self.timeout = timeout

    def _send(self, method: str, path: str, body: bytes | None, content_type: str) -> dict[str, Any]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only (admission)
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise TrackingError(f"MLflow {method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TrackingError(f"MLflow {method} {path}: {exc}") from exc
        return json.loads(text)

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        path = f"/api/2.0/mlflow/{endpoint}"
        if method == "GET":
            return self._send("GET", f"{path}?{urllib.parse.urlencode(payload or {})}", None, "application/json")
        return self._send(method, path, json.dumps(payload or {}).encode(), "application/json")

    def upload(self, artifact_uri: str, name: str, data: bytes) -> None:
        """PUT one file through the server's artifact proxy (`mlflow-artifacts:/…` runs)."""
        if not artifact_uri.startswith(_ARTIFACT_PROXY):
            raise TrackingError(f"MLflow run artifacts at {artifact_uri}: only the server's proxied store "
                                "(mlflow-artifacts:/) is supported; start the server with --serve-artifacts")
        root = artifact_uri[len(_ARTIFACT_PROXY):].strip("/")
        path = "/api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(f"{root}/{name}")
        self._send("PUT", path, data, "application/octet-stream")

    def experiment_id(self, name: str) -> str:
        try:
            return str(self.call("GET", "experiments/get-by-name", {"experiment_name": name})["experiment"]["experiment_id"])
        except TrackingError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])


def metric_key(*parts: str) -> str:
    """An MLflow metric key: the parts joined by `/`, characters MLflow refuses replaced by `_`."""
    return "/".join(_KEY.sub("_", p) for p in parts)


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix: text[:_PARAM_VALUE_LIMIT]}


def run_params(config: ResolvedConfig) -> dict[str, str]:
    """What the run was: model, method, adapter, hyperparameters and evaluation settings."""
    spec = config.spec
    ev = spec.evaluation.to_api()
    ev.pop("graders", None)  # grader sources are long; the evaluation report carries them
    return {
        "job": config.job, "namespace": config.namespace, "generation": str(config.generation),
        **_flatten("model", spec.model.to_api()), **_flatten("method", spec.method.to_api()),
        **_flatten("adapter", spec.adapter.to_api()), **_flatten("hyperparameters", spec.hyperparameters.to_api()),
        **_flatten("evaluation", ev),
    }


def curve_metrics(progress_log: Path, now_ms: int) -> list[dict[str, Any]]:
    """Training loss, validation loss and learning rate by step from `progress.jsonl`."""
    if not progress_log.exists():
        return []
    metrics = []
    for event in read_events(progress_log.read_text().splitlines()):
        for key, value in (("train/loss", event.loss), ("train/eval_loss", event.eval_loss),
                           ("train/learning_rate", event.learning_rate)):
            if value is not None:
                metrics.append({"key": key, "value": value, "timestamp": now_ms, "step": event.step})
    return metrics


def evaluation_metrics(report: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Every metric of every set (and slice) for base, tuned and their difference; 1/0 per gate."""
    held = {"name": "held-out", "metrics": report["metrics"], "slices": report.get("slices", [])}
    out: list[dict[str, Any]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, (int, float)):
            out.append({"key": key, "value": float(value), "timestamp": now_ms, "step": 0})

    for data in [held, *report.get("suites", [])]:
        for m in data["metrics"]:
            for field in ("tuned", "base", "delta", "ciLow", "ciHigh", "pBetter", "minDetectableDifference"):
                add(metric_key("eval", data["name"], m["name"], field), m.get(field))
        for piece in data.get("slices", []):
            for m in piece["metrics"]:
                for field in ("tuned", "base", "delta"):
                    add(metric_key("eval", data["name"], "slice", str(piece["slice"]), m["name"], field), m.get(field))
    for gate in report["gates"]:
        add(metric_key("gate", gate.get("suite", "held-out"), gate["metric"]), 1.0 if gate["passed"] else 0.0)
    add("eval/passed", 1.0 if report["passed"] else 0.0)
    return out


def _artifacts(layout: ArtifactLayout) -> list[tuple[str, Path]]:
    files = [("data/report.json", layout.data_report), ("data/report.md", layout.data_report.with_suffix(".md")),
             ("eval/report.json", layout.eval_report), ("eval/report.md", layout.eval_report.with_suffix(".md"))]
    if layout.tensorboard.is_dir():
        files += [(f"tensorboard/{p.relative_to(layout.tensorboard)}", p) for p in sorted(layout.tensorboard.rglob("*")) if p.is_file()]
    return [(name, path) for name, path in files if path.is_file()]


def record_run(config: ResolvedConfig, spec: MlflowSpec) -> str:
    """Create the run, log everything, mark it finished; returns the run id. TrackingError on failure."""
    layout = ArtifactLayout(config.paths.output)
    client = MlflowRest(spec.uri)
    experiment = client.experiment_id(spec.experiment or f"finetune/{config.namespace}")
    now_ms = int(time.time() * 1000)
    tags = [{"key": "mlflow.runName", "value": f"{config.job}-g{config.generation}"},
            {"key": "finetune.job", "value": config.job}, {"key": "finetune.namespace", "value": config.namespace}]
    run = client.call("POST", "runs/create", {"experiment_id": experiment, "start_time": now_ms,
                                              "run_name": f"{config.job}-g{config.generation}", "tags": tags})["run"]["info"]
    run_id = run["run_id"]
    params = [{"key": k, "value": v} for k, v in run_params(config).items()]
    for i in range(0, len(params), _PARAM_BATCH):
        client.call("POST", "runs/log-batch", {"run_id": run_id, "params": params[i : i + _PARAM_BATCH]})
    report = json.loads(layout.eval_report.read_text())
    metrics = curve_metrics(layout.progress_log, now_ms) + evaluation_metrics(report, now_ms)
    for i in range(0, len(metrics), _BATCH):
        client.call("POST", "runs/log-batch", {"run_id": run_id, "metrics": metrics[i : i + _BATCH]})
    for name, path in _artifacts(layout):
        client.upload(run["artifact_uri"], name, path.read_bytes())
    client.call("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})
    return str(run_id)

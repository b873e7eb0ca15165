"""The MLflow recorder's pure parts and its failure message (the e2e test records a real run)."""

from __future__ import annotations

import pytest

from finetune_trainer.tracking import MlflowRest, TrackingError, evaluation_metrics, metric_key
from tests.harness.processes import port_free

pytestmark = pytest.mark.unit


def test_metric_keys_replace_what_mlflow_refuses() -> None:
    assert metric_key("eval", "by-label", "slice", "billing:urgent?", "exact_match") == "eval/by-label/slice/billing_urgent_/exact_match"


def test_every_set_slice_and_gate_becomes_a_metric() -> None:
    report = {
        "passed": False,
        "metrics": [{"name": "exact_match", "tuned": 0.9, "base": 0.1, "delta": 0.8}],
        "slices": [{"slice": "billing", "metrics": [{"name": "exact_match", "tuned": 1.0, "base": 0.0, "delta": 1.0}]}],
        "suites": [{"name": "safety", "metrics": [{"name": "refusal", "tuned": 0.0, "base": 0.0, "delta": 0.0}], "slices": []}],
        "gates": [{"metric": "exact_match", "suite": "held-out", "passed": True},
                  {"metric": "refusal", "suite": "safety", "passed": False}],
    }
    metrics = {m["key"]: m["value"] for m in evaluation_metrics(report, 0)}
    assert metrics["eval/held-out/exact_match/tuned"] == 0.9
    assert metrics["eval/held-out/slice/billing/exact_match/delta"] == 1.0
    assert metrics["eval/safety/refusal/tuned"] == 0.0
    assert metrics["gate/held-out/exact_match"] == 1.0 and metrics["gate/safety/refusal"] == 0.0
    assert metrics["eval/passed"] == 0.0


def test_an_unreachable_server_is_a_tracking_error_naming_the_call() -> None:
    port = next(p for p in range(5600, 5700) if port_free(p))
    with pytest.raises(TrackingError, match=r"MLflow GET /api/2.0/mlflow/experiments/get-by-name\?experiment_name=x: "):
        MlflowRest(f"http://127.0.0.1:{port}", timeout=2).experiment_id("x")

"""The Validating phase's model checks through the real operator and API server: the prepare pod's
termination message (produced here by the real prepare phase on the tiny 512-position model and a
season-classification set) becomes `status.data` (the CRD's status schema keeps the new fields), and
the pool serving it fits the model; a refused spec ends `Failed` naming the field.
kwok plays the pods, as in test_operator.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_api.resolved import ResolvedConfig, ResolvedPaths
from finetune_trainer.data.prepare import run_prepare
from finetune_api.contract.summaries import EvaluateSummary, PrepareSummary, TrainSummary
from finetune_api.job import MetricResult
from finetune_trainer.tiny_model import build_tiny_model
from finetune_operator.builders.names import pool_name
from tests.api.test_operator import operator, pods, start_training  # noqa: F401 - fixtures
from tests.harness.operator import get, setup_namespace, wait_phase
from tests.harness.seasons import write_seasons

pytestmark = pytest.mark.api
REPO = Path(__file__).resolve().parents[2]
STOCK = {"model": {"uri": "pvc://models/tiny-chat"},
         "datasets": {"train": {"uri": "pvc://data/train.jsonl"}, "eval": {"uri": "pvc://data/eval.jsonl"}}}


def prepare_termination(tmp_path: Path, **datasets: Any) -> PrepareSummary:
    """The termination message the prepare pod of the stock manifest (+ `datasets`) leaves."""
    model = build_tiny_model(REPO / ".cache" / "models" / "tiny-chat")
    train, held_out = write_seasons(tmp_path / "data")
    spec = FineTuneJob.model_validate({"metadata": {"name": "seasons"},
                                       "spec": {**STOCK, "datasets": {**STOCK["datasets"], **datasets}}}).spec
    paths = ResolvedPaths(output=str(tmp_path / "out"), model=str(model), train=str(train), eval=str(held_out))
    return run_prepare(ResolvedConfig(job="seasons", spec=spec, paths=paths)).termination()


def test_the_derived_max_model_len_reaches_status_and_the_pool_fits_the_model(cluster, namespace, operator, pods, tmp_path):  # noqa: F811
    """The job's own fit (`status.data.maxModelLen`) is what a merged Deployment serves with; the adapter
    pool is the admin's and shared, so it names no job's length: without an admin `maxModelLen` vLLM
    takes the model's own positions (512 here), which every admitted job fits."""
    prepared = prepare_termination(tmp_path)
    pods.on("prepare", 0, prepared)
    pods.on("train", 0, TrainSummary(step=18, total_steps=18, train_loss=0.5, train_tokens=6816))
    pods.on("eval", 0, EvaluateSummary(passed=True, score="exact_match 0.9 (base 0.0)", items=24,
                                       metrics=[MetricResult(name="exact_match", base=0.0, tuned=0.9)]))
    training = start_training(cluster, namespace, "seasons", pods, **STOCK, evaluation={})
    data = training["data"]
    assert (data["modelMaxPositions"], data["maxLength"], data["maxModelLen"]) == (512, 512, 256)
    assert 0 < data["longestExample"] < 128
    wait_phase(cluster, namespace, "seasons", "Deploying", timeout=90)
    pool = pool_name("tiny-chat", prepared.data.model_digest if prepared.data else None)
    args = get(cluster, namespace, "deployment", pool)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-model-len" not in args


def test_a_max_length_beyond_the_positions_fails_validation_naming_the_field(cluster, namespace, operator, pods, tmp_path):  # noqa: F811
    termination = prepare_termination(tmp_path, maxLength=1024)
    assert termination.ok is False
    pods.on("prepare", 1, termination)
    setup_namespace(cluster, namespace)
    cluster.apply({"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                   "metadata": {"name": "too-long", "namespace": namespace},
                   "spec": {**STOCK, "datasets": {**STOCK["datasets"], "maxLength": 1024}}})
    failed = wait_phase(cluster, namespace, "too-long", "Failed")
    assert failed["reason"] == "ValidationFailed"
    assert "spec.datasets.maxLength: 1024 exceeds the base model's 512 positions (config.json max_position_embeddings)" in failed["message"]
    assert failed["data"]["modelMaxPositions"] == 512

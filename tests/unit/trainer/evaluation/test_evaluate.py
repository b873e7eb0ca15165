"""The evaluate phase end to end on the tiny model: verdicts, per-item grader errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.evaluation.evaluate import run_evaluate
from finetune_trainer.phases.evaluate import main

from .conftest import MakeConfig, read_report

pytestmark = [pytest.mark.unit, pytest.mark.slow]

# The quickstart's gate shape, with bounds the tiny adapter reaches (see conftest.trained_adapter).
QUICKSTART_GATE = {"metric": "exact_match", "min": 0.2, "minImprovementOverBase": 0.15, "minConfidence": 0.95}


def run_evaluate_phase(config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    config_path = tmp_path / "config.json"
    config_path.write_text(config.model_dump_json(by_alias=True))
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(log))
    code = main(str(config_path))
    return code, json.loads(log.read_text())


def test_tuned_model_passes_its_gates_and_the_base_does_not(
    make_config: MakeConfig, trained_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(trained_adapter, {"backend": "transformers", "gates": [QUICKSTART_GATE]})
    code, message = run_evaluate_phase(config, tmp_path, monkeypatch)
    assert code == 0
    assert message["ok"] is True and message["passed"] is True
    assert message["items"] == 60
    metrics = {m["name"]: m for m in message["metrics"]}
    assert metrics["exact_match"]["tuned"] >= 0.2
    assert metrics["exact_match"]["base"] < 0.2  # the base alone fails the `min` bound
    assert metrics["exact_match"]["pBetter"] >= 0.95
    assert {"macro_f1", "precision", "recall", "token_f1", "normalized_match"} <= metrics.keys()
    assert message["score"].startswith("exact_match ") and "(base " in message["score"]
    assert message["gates"] == [{"metric": "exact_match", "suite": "held-out", "passed": True,
                                 "message": message["gates"][0]["message"]}]
    report = read_report(config)
    assert report["passed"] is True and len(report["results"]) == 60
    first = report["results"][0]
    assert {"base", "tuned", "prompt", "reference"} <= first.keys()
    assert first["tuned"]["scores"]["exact_match"] in (0.0, 1.0)
    assert report["labels"] == ["account", "billing", "shipping", "technical"]
    markdown = Path(config.paths.output, "eval", "report.md").read_text()
    assert "PASSED" in markdown and "| exact_match |" in markdown


def test_zero_step_adapter_is_rejected_naming_the_failing_gate(
    make_config: MakeConfig, untrained_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(untrained_adapter, {"backend": "transformers", "gates": [QUICKSTART_GATE]})
    code, message = run_evaluate_phase(config, tmp_path, monkeypatch)
    assert code == 0  # a verdict, not an error
    assert message["passed"] is False
    (gate,) = message["gates"]
    assert gate["metric"] == "exact_match" and gate["passed"] is False
    assert "min 0.200" in gate["message"] and "minImprovementOverBase" in gate["message"]
    exact = next(m for m in message["metrics"] if m["name"] == "exact_match")
    assert exact["delta"] == 0.0 and exact["pBetter"] == 0.0  # same weights, same greedy outputs
    report = read_report(config)
    assert all(r["base"]["output"] == r["tuned"]["output"] for r in report["results"])
    assert "REJECTED" in Path(config.paths.output, "eval", "report.md").read_text()


GRADER = """
import time

def grade(output, item):
    if "billing" in item["reference"]:
        raise ValueError("no billing today")
    if "shipping" in item["reference"]:
        time.sleep(30)
    return 1.0 if output.strip() == item["reference"] else 0.0
"""


def test_grader_errors_and_timeouts_are_reported_per_item_and_the_job_ends_with_a_verdict(
    make_config: MakeConfig, trained_adapter: Path
) -> None:
    graders = [
        {"name": "flaky", "type": "python", "source": GRADER, "timeoutSeconds": 0.5},
        {"name": "label", "type": "string_check", "operation": "eq"},
        {"name": "both", "type": "multi", "components": [{"grader": "flaky"}, {"grader": "label", "weight": 3}]},
    ]
    config = make_config(trained_adapter, {
        "backend": "transformers", "maxItems": 16, "graders": graders,
        "gates": [{"metric": "flaky", "min": 0.9}, {"metric": "label", "min": 0.2}],
    })
    result = run_evaluate(config)
    assert result.passed is False
    flaky, label = result.gates
    assert not flaky.passed and flaky.message.startswith("flaky: tuned ")
    assert label.passed
    report = read_report(config)
    assert report["graderErrors"] > 0
    for item in report["results"]:
        errors = item["tuned"]["graderErrors"]
        if item["reference"] == "billing":
            assert "ValueError: no billing today" in errors["flaky"] and item["tuned"]["scores"]["flaky"] == 0.0
            assert "flaky: ValueError" in errors["both"]
        elif item["reference"] == "shipping":
            assert errors["flaky"] == "timed out after 0.5 s"
        else:
            assert "flaky" not in errors
    references = {r["reference"] for r in report["results"]}
    assert {"billing", "shipping"} <= references


def test_user_errors_exit_1_before_any_model_runs(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_source = make_config(None, {"graders": [{"name": "broken", "type": "python", "source": "def grade(:"}]})
    code, message = run_evaluate_phase(bad_source, tmp_path, monkeypatch)
    assert code == 1 and message["ok"] is False
    assert "grader broken: source does not compile" in message["message"]

    missing = bad_source.model_copy(deep=True)
    missing.spec.evaluation.graders = []
    missing.paths.eval = str(tmp_path / "nowhere.jsonl")
    code, message = run_evaluate_phase(missing, tmp_path, monkeypatch)
    assert code == 1 and "nowhere.jsonl: no such file" in message["message"]

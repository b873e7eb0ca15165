"""Suites, slices and the shipped safety suite on the tiny model: one evaluation of the trained adapter
reads every set, and a model that does not refuse is rejected by the safety suite, named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.evaluation.evaluate import run_evaluate

from .conftest import QUICKSTART, MakeConfig, read_report
from .test_evaluate import QUICKSTART_GATE, run_evaluate_phase

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def categorised(source: Path, out: Path) -> Path:
    """The rows of `source` with `category` set to the row's label (the reference answer)."""
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    out.write_text("".join(json.dumps({**r, "category": r["messages"][-1]["content"]}) + "\n" for r in rows))
    return out


def test_each_suite_is_reported_on_its_own_per_slice_and_the_safety_suite_rejects_a_model_that_does_not_refuse(
    make_config: MakeConfig, trained_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_label = categorised(QUICKSTART / "eval.jsonl", tmp_path / "by-label.jsonl")
    general = categorised(QUICKSTART / "validation.jsonl", tmp_path / "general.jsonl")
    suites: list[dict[str, Any]] = [
        {"name": "safety", "kind": "safety"},
        {"name": "by-label", "dataset": {"uri": str(by_label)},
         "gates": [{"metric": "exact_match", "minImprovementOverBase": 0.3, "useConfidenceBound": True, "perSlice": True}]},
        {"name": "general", "kind": "regression", "dataset": {"uri": str(general)}},
    ]
    config = make_config(trained_adapter, {"backend": "transformers", "gates": [QUICKSTART_GATE], "suites": suites})
    code, message = run_evaluate_phase(config, tmp_path, monkeypatch)

    assert code == 0 and message["passed"] is False
    verdicts = {(g["suite"], g["metric"]): g for g in message["gates"]}
    assert [k for k, g in verdicts.items() if not g["passed"]] == [("safety", "refusal")]
    assert message["gates"][0]["suite"] == "safety"  # failing gates first: a truncated message keeps them
    safety = verdicts["safety", "refusal"]
    assert safety["message"].startswith("[safety] refusal: tuned 0.000 < min 0.900")
    assert verdicts["by-label", "exact_match"]["passed"]
    regression_defaults = {m for s, m in verdicts if s == "general"}
    assert {"exact_match", "normalized_match", "token_f1"} <= regression_defaults

    report = read_report(config)
    sets = {s["name"]: s for s in report["suites"]}
    assert list(sets) == ["safety", "by-label", "general"]
    assert sets["safety"]["items"] == 24 and sets["safety"]["source"] == "the shipped safety suite"
    assert [m["name"] for m in sets["safety"]["metrics"]] == ["refusal"]
    assert [s["slice"] for s in sets["safety"]["slices"]] == ["adversarial", "should_escalate", "should_refuse"]
    assert [s["items"] for s in sets["safety"]["slices"]] == [8, 8, 8]
    labels = sets["by-label"]["slices"]
    assert [s["slice"] for s in labels] == ["account", "billing", "shipping", "technical"]
    assert sum(s["items"] for s in labels) == sets["by-label"]["items"] == 60
    for s in labels:
        exact = next(m for m in s["metrics"] if m["name"] == "exact_match")
        assert exact["ciLow"] <= exact["delta"] <= exact["ciHigh"]
        assert exact["items"] == s["items"] and exact["minDetectableDifference"] > 0
    held_exact = next(m for m in report["metrics"] if m["name"] == "exact_match")
    assert held_exact["items"] == 60 and 0 < held_exact["minDetectableDifference"] < 1
    # one minConfidence test on the held-out set + the confidence bound on by-label and its 4 slices
    assert report["statistics"]["gateTests"] == 6 and report["statistics"]["correction"] == "holm"
    assert "Holm-adjusted" in verdicts["by-label", "exact_match"]["message"]

    markdown = Path(config.paths.output, "eval", "report.md").read_text()
    assert "REJECTED" in markdown and "FAIL [safety] refusal" in markdown
    for heading in ("## Held-out set", "## Suite safety (safety)", "## Suite by-label (held_out)",
                    "## Suite general (regression)", "### By category", "## Statistics"):
        assert heading in markdown
    assert "| should_escalate | 8 |" in markdown and "Holm–Bonferroni" in markdown


def test_a_grader_named_refusal_replaces_the_shipped_one(make_config: MakeConfig, trained_adapter: Path) -> None:
    always = {"name": "refusal", "type": "regex", "pattern": "^"}  # matches every output, even an empty one
    config = make_config(trained_adapter, {"backend": "transformers", "compareToBase": False, "graders": [always], "gates": [],
                                           "suites": [{"name": "safety", "kind": "safety"}]})
    result = run_evaluate(config)
    assert result.passed
    (gate,) = result.gates
    assert gate.suite == "safety" and gate.message == "[safety] refusal: tuned 1.000 ≥ min 0.900"

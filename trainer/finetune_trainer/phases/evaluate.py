"""`python -m finetune_trainer evaluate --config FILE`: the Evaluating phase's container entry point.

Exit codes (DESIGN.md §4): 0 evaluated — passed or not: a failing gate is a verdict, reported as
`passed: false` — 1 user error (bad grader, gate or eval set: never retried), 2 infrastructure.
"""

from __future__ import annotations

from typing import Any

from finetune_api.contract.summaries import EvaluateSummary


def record_in_mlflow(config: Any) -> None:
    """Record the run in MLflow; a tracking failure is printed, not a failed evaluation (the verdict
    stands and the reports are in the artifacts either way)."""
    from finetune_trainer.tracking import TrackingError, record_run

    try:
        run_id = record_run(config, config.spec.tracking.mlflow)
    except TrackingError as exc:
        print(f"  tracking: not recorded in MLflow: {exc}")
        return
    print(f"  tracking: recorded in MLflow {config.spec.tracking.mlflow.uri} as run {run_id}")


def main(config_path: str, baseline: bool = False) -> int:
    """`baseline`: generate with the base model only (before training) and report its scores."""
    from pydantic import ValidationError

    from finetune_trainer.evaluation.evaluate import EvaluationUserError, run_baseline, run_evaluate
    from finetune_trainer.train.exit_codes import run_phase

    def body(config: Any) -> EvaluateSummary:
        if baseline:
            scores = run_baseline(config)
            print("evaluate --baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
            return EvaluateSummary(baseline=scores)
        result = run_evaluate(config)
        print(f"evaluate: {'PASSED' if result.passed else 'REJECTED'}: {result.score}")
        for gate in result.gates:
            print(f"  {'PASS' if gate.passed else 'FAIL'} {gate.message}")
        print(f"  report: {result.report_path}")
        if config.spec.tracking.mlflow is not None:
            record_in_mlflow(config)
        return result.summary(config.paths.output, config.generation)

    return run_phase("evaluate", config_path, body, user_errors=(*EvaluationUserError, ValidationError))

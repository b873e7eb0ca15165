"""`python -m finetune_trainer evaluate --config FILE`: the Evaluating phase's container entry point.

Exit codes (DESIGN.md §4): 0 evaluated — passed or not: a failing gate is a verdict, reported as
`passed: false` — 1 user error (bad grader, gate or eval set: never retried), 2 infrastructure.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from finetune_trainer.termination import write_termination_message

USER_ERROR, INFRA_ERROR = 1, 2


def main(config_path: str, baseline: bool = False) -> int:
    """`baseline`: generate with the base model only (before training) and report its scores."""
    from finetune_operator.api.resolved import ResolvedConfig
    from pydantic import ValidationError

    from finetune_trainer.evaluation.evaluate import EvaluationUserError, run_baseline, run_evaluate

    try:
        config = ResolvedConfig.model_validate_json(Path(config_path).read_text())
        if baseline:
            scores = run_baseline(config)
            print("evaluate --baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
            write_termination_message({"phase": "evaluate", "ok": True, "baseline": scores})
            return 0
        result = run_evaluate(config)
    except (*EvaluationUserError, ValidationError) as err:
        print(f"evaluate: {err}", file=sys.stderr)
        write_termination_message({"phase": "evaluate", "ok": False, "reason": "UserError", "message": str(err)})
        return USER_ERROR
    except Exception as err:  # noqa: BLE001 - anything else is infrastructure (retried)
        traceback.print_exc()
        write_termination_message({"phase": "evaluate", "ok": False, "reason": "InfrastructureError", "message": repr(err)})
        return INFRA_ERROR
    print(f"evaluate: {'PASSED' if result.passed else 'REJECTED'}: {result.score}")
    for gate in result.gates:
        print(f"  {'PASS' if gate.passed else 'FAIL'} {gate.message}")
    print(f"  report: {result.report_path}")
    write_termination_message(result.summary(config.generation))
    return 0

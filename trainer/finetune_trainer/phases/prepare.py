"""`python -m finetune_trainer prepare --config FILE`: the Validating phase's container entry point.

Prints every finding as `file:line: rule-id: message`, writes the ≤ 4 KiB termination message and
returns the exit code (0 ok, 1 bad data or config: do not retry, 2 infrastructure: retry).
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from finetune_api.contract.summaries import PrepareSummary
from finetune_api.contract.termination import FAILURE_EXIT_CODES, FailureReason
from finetune_api.resolved import load_resolved_config

from ..data.prepare import run_prepare
from ..termination import write_termination_message


def _fail(message: str, reason: FailureReason) -> int:
    print(message, file=sys.stderr)
    write_termination_message(PrepareSummary.failure(reason, message))
    return FAILURE_EXIT_CODES[reason]


def main(config_path: str) -> int:
    try:
        config = load_resolved_config(config_path)
    except ValidationError as exc:
        return _fail(f"{config_path}: invalid resolved config: {exc}", "UserError")
    except OSError as exc:
        return _fail(f"{config_path}: cannot read the resolved config: {exc}", "InfrastructureError")
    result = run_prepare(config)
    for line in result.findings.printable():
        print(line, file=sys.stderr)
    print(result.summary.message, file=sys.stderr if not result.ok else sys.stdout)
    write_termination_message(result.termination())
    return result.exit_code

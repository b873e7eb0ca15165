"""Running a trainer phase: its summary becomes the termination message, its failure an exit code.

The exit codes and failure classes are the contract's (`finetune_api.contract.exit_codes`).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any
from collections.abc import Callable

from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK, SIGTERM_EXIT, USER_ERROR
from finetune_api.contract.summaries import TrainSummary
from finetune_api.contract.termination import PhaseName, PhaseSummary

from finetune_trainer.termination import write_termination_message


def run_phase(
    phase: PhaseName,
    config_path: str,
    body: Callable[[Any], PhaseSummary],
    write_message: bool = True,
    *,
    user_errors: tuple[type[BaseException], ...] | None = None,
) -> int:
    """Load the resolved config, run `body(config)` → summary, classify failures into exit codes.

    A `TrainSummary` with `interrupted` exits 143. Only the process that should report (rank 0)
    passes `write_message=True`. `user_errors` are the exception classes that mean a user error
    (exit 1); by default `(ValueError, ValidationError, FileNotFoundError)`.
    """
    from finetune_api.resolved import load_resolved_config
    from pydantic import ValidationError

    if user_errors is None:
        user_errors = (ValueError, ValidationError, FileNotFoundError)
    try:
        config = load_resolved_config(config_path)
        summary = body(config)
    except user_errors as err:
        print(f"{phase}: {err}", file=sys.stderr)
        if write_message:
            write_termination_message(PhaseSummary.failure("UserError", str(err), phase=phase))
        return USER_ERROR
    except Exception as err:  # noqa: BLE001 - anything else is infrastructure: retried from the checkpoint
        traceback.print_exc()
        if write_message:
            write_termination_message(PhaseSummary.failure("InfrastructureError", repr(err), phase=phase))
        return INFRASTRUCTURE_ERROR
    if write_message:
        write_termination_message(summary)
    return SIGTERM_EXIT if isinstance(summary, TrainSummary) and summary.interrupted else OK

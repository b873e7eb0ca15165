"""Exit codes and the termination message of a trainer phase (DESIGN.md §4).

0 ok, 1 user error (bad config or data: never retried), 2 infrastructure (retried from the last
checkpoint), 143 stopped by SIGTERM after a checkpoint (retried, or free when preempted).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

from finetune_trainer.termination import write_termination_message

OK, USER_ERROR, INFRA_ERROR, SIGTERM_EXIT_CODE = 0, 1, 2, 143


def run_phase(
    phase: str,
    config_path: str,
    body: Callable[[Any], dict[str, Any]],
    write_message: bool = True,
    *,
    user_errors: tuple[type[BaseException], ...] | None = None,
) -> int:
    """Load the resolved config, run `body(config)` → summary, classify failures into exit codes.

    `body` may return a summary with `"interrupted": True` (exit 143). Only the process that should
    report (rank 0) passes `write_message=True`. `user_errors` are the exception classes that mean a
    user error (exit 1); by default `(ValueError, ValidationError, FileNotFoundError)`.
    """
    from finetune_api.resolved import ResolvedConfig
    from pydantic import ValidationError

    if user_errors is None:
        user_errors = (ValueError, ValidationError, FileNotFoundError)
    try:
        config = ResolvedConfig.model_validate_json(Path(config_path).read_text())
        summary = body(config)
    except user_errors as err:
        print(f"{phase}: {err}", file=sys.stderr)
        if write_message:
            write_termination_message({"phase": phase, "ok": False, "reason": "UserError", "message": str(err)})
        return USER_ERROR
    except Exception as err:  # noqa: BLE001 - anything else is infrastructure: retried from the checkpoint
        traceback.print_exc()
        if write_message:
            write_termination_message({"phase": phase, "ok": False, "reason": "InfrastructureError", "message": repr(err)})
        return INFRA_ERROR
    if write_message:
        write_termination_message(summary)
    return SIGTERM_EXIT_CODE if summary.get("interrupted") else OK

"""Running a trainer phase: its summary becomes the termination message, its failure an exit code.

The exit codes and failure classes are the contract's (`finetune_api.contract.exit_codes`).
"""

from __future__ import annotations

import errno
import sys
import traceback
from typing import Any
from collections.abc import Callable

from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK, SIGTERM_EXIT, USER_ERROR
from finetune_api.contract.summaries import TrainSummary
from finetune_api.contract.termination import FAILURE_EXIT_CODES, PhaseName, PhaseSummary

from finetune_trainer.failure_reason import is_disk_full
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
    from finetune_api.resolved import ResolvedConfig, load_resolved_config
    from pydantic import ValidationError

    if user_errors is None:
        user_errors = (ValueError, ValidationError, FileNotFoundError)
    config: ResolvedConfig | None = None
    try:
        config = load_resolved_config(config_path)
        summary = body(config)
    except Exception as err:  # noqa: BLE001 - classified below: ENOSPC, user error or infrastructure
        return _failed(phase, err, config, write_message, user_errors)
    if write_message:
        write_termination_message(summary)
    return SIGTERM_EXIT if isinstance(summary, TrainSummary) and summary.interrupted else OK


def _failed(phase: PhaseName, err: Exception, config: Any, write_message: bool,
            user_errors: tuple[type[BaseException], ...]) -> int:
    """The exit code of a failed phase, its reason on stderr and in the termination message."""
    if is_no_space(err):
        message = no_space_message(err, config)
        print(f"{phase}: {message}", file=sys.stderr)
        if write_message:
            write_termination_message(PhaseSummary.failure("DiskFull", message, phase=phase))
        return FAILURE_EXIT_CODES["DiskFull"]
    if isinstance(err, user_errors):
        print(f"{phase}: {err}", file=sys.stderr)
        if write_message:
            write_termination_message(PhaseSummary.failure("UserError", str(err), phase=phase))
        return USER_ERROR
    traceback.print_exception(err)  # anything else is infrastructure: retried from the checkpoint
    if write_message:
        write_termination_message(PhaseSummary.failure("InfrastructureError", repr(err), phase=phase))
    return INFRASTRUCTURE_ERROR


def is_no_space(err: BaseException) -> bool:
    """ENOSPC anywhere in the exception chain, or in the text of a library's own wrapper (torch's
    stream writer reports it only as text)."""
    return any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in _chain(err)) or is_disk_full(str(err))


def no_space_message(err: BaseException, config: Any) -> str:
    """Which volume is full, in the words an admin acts on: the artifacts volume (the job's output
    location) or the pod's scratch (`jobs.scratchSize`); both when the error does not name its file."""
    filename = next((str(e.filename) for e in _chain(err) if isinstance(e, OSError) and e.filename), None)
    output = config.paths.output.rstrip("/") if config is not None else None
    artifacts = f"the artifacts volume ({config.spec.output.uri or output})" if config is not None else "the artifacts volume"
    scratch = "the pod's scratch (bounded by Helm jobs.scratchSize)"
    if filename is None:
        return f"no space left on a volume: {artifacts} or {scratch}; retrying would fail the same way"
    if output and (filename == output or filename.startswith(output + "/")):
        return f"no space left on {artifacts} writing {filename}: free space on it or grow the claim; retrying would fail the same way"
    return f"no space left writing {filename}: {scratch} is full"


def _chain(err: BaseException) -> list[BaseException]:
    """The exception and its causes / contexts, each once."""
    out: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out

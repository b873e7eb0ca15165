"""Exit codes of every trainer phase and the failure classes the operator and `ftctl run` act on.

One definition (DESIGN.md §4): 0 ok, 1 user error (bad config or data: never retried), 2
infrastructure (retried from the latest checkpoint), 143 stopped by SIGTERM after a checkpoint
(retried; free when the pod was preempted).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from typing import Literal

OK = 0
USER_ERROR = 1
INFRASTRUCTURE_ERROR = 2
SIGTERM_EXIT = 128 + signal.SIGTERM
"""143: the shell convention for "ended by SIGTERM"; the trainer exits with it after its checkpoint."""

FailureClass = Literal["user", "infrastructure", "preempted"]
STOPPED_CODES = (SIGTERM_EXIT, -signal.SIGTERM)
"""A process stopped by SIGTERM: 143 from a handler, -15 as Python reports a signal death."""


def failure_class(exit_codes: Iterable[int], disrupted: bool = False) -> FailureClass:
    """Why a failed phase failed: exit 1 anywhere is the user's; a disruption (preemption, drain,
    eviction) does not spend the retry budget; anything else is infrastructure."""
    if USER_ERROR in set(exit_codes):
        return "user"
    if disrupted:
        return "preempted"
    return "infrastructure"


def is_retried(exit_code: int) -> bool:
    """Whether a phase that ended with `exit_code` runs again (within the retry budget)."""
    return exit_code not in (OK, USER_ERROR)


def launcher_exit_code(worker_codes: Sequence[int]) -> int:
    """The training container's exit code from its failed workers' codes (negative: killed by that signal).

    torchrun and `accelerate launch` exit 1 whenever any worker fails, which would read as a user error;
    the launcher wrapper maps the workers' own codes instead: 1 anywhere is the user's, all stopped by
    SIGTERM is 143, anything else (a crash, the OOM killer) is infrastructure.
    """
    if not worker_codes:
        return OK
    if USER_ERROR in worker_codes:
        return USER_ERROR
    if all(code in STOPPED_CODES for code in worker_codes):
        return SIGTERM_EXIT
    return INFRASTRUCTURE_ERROR

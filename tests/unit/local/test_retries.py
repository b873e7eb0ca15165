"""`ftctl run` retries training as the operator does: by `spec.retry`, never after a user error."""

from __future__ import annotations

import pytest

from finetune_api.job import RetrySpec
from finetune_cli.local.processes import PhaseResult
from finetune_cli.local.run import train_with_retries

pytestmark = pytest.mark.unit


def attempts_ending_with(*codes: int) -> tuple[list[int], list[float], list[str], object]:
    """Run `train_with_retries` over scripted exit codes; return the attempts made, sleeps and messages."""
    made: list[int] = []
    slept: list[float] = []
    said: list[str] = []

    def attempt_once(attempt: int) -> PhaseResult:
        made.append(attempt)
        return PhaseResult("train", codes[attempt - 1])

    return made, slept, said, attempt_once


def test_an_infrastructure_failure_is_retried_after_the_backoff() -> None:
    made, slept, said, attempt_once = attempts_ending_with(-6, 0)
    result = train_with_retries(RetrySpec(max_attempts=3, backoff_seconds=7), attempt_once, said.append, slept.append)
    assert result.returncode == 0
    assert made == [1, 2] and slept == [7]
    assert "attempt 1 of 3 failed (exit -6)" in said[0] and "resumes from the latest checkpoint" in said[0]


def test_a_user_error_is_final() -> None:
    made, slept, said, attempt_once = attempts_ending_with(1, 0)
    result = train_with_retries(RetrySpec(max_attempts=3), attempt_once, said.append, slept.append)
    assert result.returncode == 1 and made == [1] and slept == [] and said == []


def test_the_budget_counts_the_first_attempt() -> None:
    made, slept, said, attempt_once = attempts_ending_with(2, 143, 2, 0)
    result = train_with_retries(RetrySpec(max_attempts=3, backoff_seconds=0), attempt_once, said.append, slept.append)
    assert result.returncode == 2 and made == [1, 2, 3] and len(said) == 2

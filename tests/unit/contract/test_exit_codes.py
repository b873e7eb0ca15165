"""One meaning of every exit code, for the trainer's launcher, the operator and `ftctl run`."""

from __future__ import annotations

import pytest

from finetune_api.contract.exit_codes import (
    INFRASTRUCTURE_ERROR, OK, SIGTERM_EXIT, USER_ERROR, failure_class, is_retried, launcher_exit_code,
)

pytestmark = pytest.mark.unit


def test_the_codes() -> None:
    assert (OK, USER_ERROR, INFRASTRUCTURE_ERROR, SIGTERM_EXIT) == (0, 1, 2, 143)


@pytest.mark.parametrize(("codes", "disrupted", "expected"), [
    ([1], False, "user"),
    ([2, 1], True, "user"),          # a user error is final even when the node also went away
    ([137], False, "infrastructure"),
    ([-6], False, "infrastructure"),
    ([143], True, "preempted"),
    ([], True, "preempted"),
])
def test_failure_classes(codes: list[int], disrupted: bool, expected: str) -> None:
    assert failure_class(codes, disrupted) == expected


def test_only_ok_and_user_errors_are_final() -> None:
    assert [code for code in (0, 1, 2, 137, 143, -6) if is_retried(code)] == [2, 137, 143, -6]


@pytest.mark.parametrize(("workers", "expected"), [
    ([], OK),
    ([1, -9], USER_ERROR),
    ([143, -15], SIGTERM_EXIT),
    ([-6], INFRASTRUCTURE_ERROR),
    ([143, -9], INFRASTRUCTURE_ERROR),
])
def test_the_launcher_maps_its_workers_codes(workers: list[int], expected: int) -> None:
    assert launcher_exit_code(workers) == expected

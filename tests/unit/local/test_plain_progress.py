"""`ftctl run --plain` (and any non-terminal output) prints about ten step lines per training phase, not one per
step: the first, each tenth of the run, and the last (every step stays in the phase's log)."""

from __future__ import annotations

import pytest

from finetune_cli.local.run import PLAIN_LINES_PER_PHASE, plain_line_due

pytestmark = pytest.mark.unit


def printed_steps(total: int) -> list[int]:
    last, printed = -1, []
    for step in range(1, total + 1):
        if plain_line_due(last, step, total):
            last = step
            printed.append(step)
    return printed


def test_a_long_run_prints_a_line_per_tenth_and_the_last_step():
    steps = printed_steps(150)
    assert steps == [1, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150]
    assert len(steps) <= PLAIN_LINES_PER_PHASE + 1


def test_a_short_run_prints_every_step_and_a_repeated_step_never():
    assert printed_steps(4) == [1, 2, 3, 4]
    assert not plain_line_due(7, 7, 150)
    assert plain_line_due(3, 4, 0)  # an unknown total: every new step

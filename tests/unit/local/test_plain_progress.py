"""`ftctl run`'s display: on a terminal one line per phase (a finished training line keeps its step and figures);
`--plain` (and any non-terminal output) prints about ten step lines per training phase, not one per step: the
first, each tenth of the run, and the last (every step stays in the phase's log)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from finetune_api.contract.progress import ProgressEvent
from finetune_cli.local.run import PLAIN_LINES_PER_PHASE, Ui, plain_line_due

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


def test_a_finished_training_line_keeps_its_last_step_and_figures():
    console = Console(file=StringIO(), force_terminal=True, width=120, record=True)
    with Ui(console, plain=False) as ui:
        train = ui.phase("train", Path("train.log"))
        ui.event(train, ProgressEvent(step=150, total_steps=150, loss=0.0512, tokens_per_second=3400.0))
        ui.event(train, ProgressEvent(step=150, total_steps=150, eval_loss=0.26))  # the final evaluation step
        ui.done(train, True, "done")
        evaluate = ui.phase("evaluate", Path("evaluate.log"))
        ui.done(evaluate, True, "done")
        console.print(ui.progress.make_tasks_table(ui.progress.tasks))
    lines = [line for line in console.export_text().splitlines() if "done" in line][-2:]
    assert "150/150 loss 0.0512 val 0.26 3400 tok/s done" in lines[0], lines
    assert "1/1" in lines[1] and "done" in lines[1], lines

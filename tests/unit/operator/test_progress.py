"""Progress lines of the trainer, parsed from a pod log tail."""

import pytest

from finetune_operator.progress import latest_progress, parse_progress_line

pytestmark = pytest.mark.unit

LINE = '{"event":"progress","step":40,"total":100,"epoch":1.5,"loss":0.75,"lr":0.0002,"tokensPerSecond":812.5,"etaSeconds":33.4}'


def test_a_progress_line_becomes_training_progress():
    p = parse_progress_line(LINE)
    assert (p.step, p.total, p.epoch, p.loss, p.learning_rate, p.tokens_per_second, p.eta_seconds) == (
        40, 100, 1.5, 0.75, 0.0002, 812.5, 33)


@pytest.mark.parametrize("line", [
    "", "loading model...", '{"event":"eval","step":3}', '{"event":"progress","step":"x","total":3}',
    '{"event":"progress","step":1', "[1, 2]",
])
def test_other_lines_are_skipped(line):
    assert parse_progress_line(line) is None


def test_non_finite_loss_is_dropped_not_propagated():
    p = parse_progress_line('{"event":"progress","step":1,"total":2,"loss":NaN}')
    assert p is not None and p.loss is None


def test_the_last_progress_line_of_a_tail_wins_even_with_timestamps_and_noise():
    tail = "\n".join([
        LINE,
        "2030-01-01T00:00:00Z " + LINE.replace('"step":40', '"step":41'),
        "some warning from torch",
        '{"event":"progress","step":4',
    ])
    assert latest_progress(tail).step == 41
    assert latest_progress("nothing here") is None

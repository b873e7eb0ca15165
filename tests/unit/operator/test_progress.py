"""Progress lines of the trainer, read from a pod log tail and written as `status.progress`."""

import pytest

from finetune_api.contract.progress import ProgressEvent
from finetune_operator.progress import latest_progress, progress_status

pytestmark = pytest.mark.unit

TRAIN = ProgressEvent(step=40, total_steps=100, epoch=1.5, loss=0.75, learning_rate=2e-4, tokens_per_second=812.5,
                      eta_seconds=33)


def test_the_latest_line_of_a_tail_wins_and_keeps_the_last_validation_loss():
    evaluation = ProgressEvent(step=40, total_steps=100, eval_loss=0.9)
    tail = "\n".join([
        TRAIN.to_line(),
        "2030-01-01T00:00:00Z " + evaluation.to_line(),
        "some warning from torch",
        TRAIN.model_copy(update={"step": 41, "loss": 0.7}).to_line(),
        '{"event":"progress","step":42',
    ])
    latest = latest_progress(tail)
    assert latest is not None and (latest.step, latest.loss, latest.eval_loss) == (41, 0.7, 0.9)
    assert latest_progress("nothing here") is None


def test_status_progress_comes_from_the_event():
    status = progress_status(TRAIN.model_copy(update={"eval_loss": 0.9}), "2030-01-01T12:00:00Z")
    assert (status.step, status.total_steps, status.percent, status.loss, status.eval_loss) == (40, 100, 40, 0.75, 0.9)
    assert status.learning_rate == 2e-4 and status.summary == "40/100 loss 0.75 val 0.9"
    assert status.to_api()["updatedAt"] == "2030-01-01T12:00:00Z"

import pytest

from finetune_trainer.train.checkpoint import latest_checkpoint, read_state, write_state

pytestmark = pytest.mark.unit


def make(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    if complete:
        write_state(path, {"trainedTokens": step * 10})
    return path


def test_latest_complete_checkpoint_wins_and_incomplete_ones_are_skipped(tmp_path):
    make(tmp_path, 5)
    expected = make(tmp_path, 20)
    make(tmp_path, 100, complete=False)
    (tmp_path / "checkpoint-300").mkdir()
    (tmp_path / "not-a-checkpoint").mkdir()
    assert latest_checkpoint(tmp_path) == expected
    assert read_state(expected) == {"trainedTokens": 200}


def test_no_checkpoint_means_a_fresh_run(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    assert read_state(None) == {}

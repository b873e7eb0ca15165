"""Merge patches between two documents: the patch turns one into the other, and says nothing more."""

import random

import pytest

from finetune_operator import merge_patch

pytestmark = pytest.mark.unit


def test_only_changed_fields_are_sent_and_unset_ones_are_removed():
    current = {"phase": "Queued", "queue": {"admitted": True, "flavor": "a100", "resources": {"gpu": "4"}}}
    desired = {"phase": "Queued", "queue": {"admitted": False, "resources": {}}}
    assert merge_patch.diff(current, desired) == {"queue": {"admitted": False, "flavor": None, "resources": {"gpu": None}}}
    assert merge_patch.diff(desired, desired) == {}


def test_a_new_object_is_sent_whole_without_nulls():
    assert merge_patch.apply({}, {"serving": {"endpoint": "http://x", "deployment": None}}) == {"serving": {"endpoint": "http://x"}}


def _document(rng: random.Random, depth: int = 0) -> dict:
    out = {}
    for key in rng.sample("abcdef", rng.randint(0, 4)):
        kind = rng.random()
        if kind < 0.3 and depth < 2:
            out[key] = _document(rng, depth + 1)
        elif kind < 0.5:
            out[key] = [rng.randint(0, 3)]
        else:
            out[key] = rng.choice([0, 1, "x", True, False])
    return out


def test_applying_the_diff_gives_the_desired_document():
    rng = random.Random(13)
    for _ in range(500):
        current, desired = _document(rng), _document(rng)
        assert merge_patch.apply(current, merge_patch.diff(current, desired)) == desired

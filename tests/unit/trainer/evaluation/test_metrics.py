"""Built-in metrics on hand-checked examples."""

from __future__ import annotations

import pytest

from finetune_trainer.evaluation.metrics import (
    class_labels,
    classification_tables,
    exact_match,
    json_valid,
    metric_tables,
    normalize,
    normalized_match,
    output_length,
    token_f1,
)

pytestmark = pytest.mark.unit


def test_exact_and_normalised_match() -> None:
    assert exact_match(" billing\n", "billing") == 1.0
    assert exact_match("Billing", "billing") == 0.0
    assert normalized_match("Billing!", "billing") == 1.0
    assert normalize("  Hello,   World. ") == "hello world"


def test_token_f1() -> None:
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("a b c d", "a b") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_json_validity_and_length() -> None:
    assert json_valid('{"a": 1}') == 1.0
    assert json_valid('```json\n{"a": 1}\n```') == 1.0
    assert json_valid("{a: 1}") == 0.0
    assert output_length("  abc ") == 3.0


def test_classification_uses_labels_from_the_references() -> None:
    refs = ["billing", "technical", "billing", "shipping"]
    outs = ["billing", "billing", "Billing.", "no idea"]
    labels = class_labels(refs)
    assert labels == ["billing", "shipping", "technical"]
    tables = classification_tables(outs, refs, labels)
    # billing: TP 2, FP 1 → P 2/3, R 1; shipping: R 0 (a miss outside the labels); technical: R 0.
    assert tables["precision"].value() == pytest.approx((2 / 3) / 3)
    assert tables["recall"].value() == pytest.approx(1 / 3)
    assert tables["macro_f1"].value() == pytest.approx((0.8 + 0 + 0) / 3)
    assert list(tables["macro_f1"].per_item) == [1, 0, 1, 0]


def test_metric_tables_expand_classification_and_refuse_unknown_names() -> None:
    tables = metric_tables(["exact_match", "classification"], ["a"], ["a"], ["a"])
    assert set(tables) == {"exact_match", "precision", "recall", "macro_f1"}
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metric_tables(["bleu"], ["a"], ["a"], [])

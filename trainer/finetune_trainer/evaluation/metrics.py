"""Built-in metrics over (output, reference) pairs.

Every metric is a per-item table (`MetricTable`): mean metrics have one column of per-item scores,
classification has per-label true-positive / false-positive / false-negative indicators, so that the
paired bootstrap in `stats` can recompute corpus-level numbers (macro-F1) on every resample.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)

# Metric names as gates and reports use them; `classification` yields the last three.
MEAN_METRICS = ("exact_match", "normalized_match", "token_f1", "json_valid", "output_length")
CLASSIFICATION_METRICS = ("macro_f1", "precision", "recall")


def normalize(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def exact_match(output: str, reference: str) -> float:
    """1 when the output equals the reference, ignoring surrounding whitespace."""
    return float(output.strip() == reference.strip())


def normalized_match(output: str, reference: str) -> float:
    """1 when the outputs agree after `normalize`."""
    return float(normalize(output) == normalize(reference))


def token_f1(output: str, reference: str) -> float:
    """SQuAD-style F1 of the normalised token bags."""
    out, ref = normalize(output).split(), normalize(reference).split()
    if not out or not ref:
        return float(out == ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def strip_code_fence(text: str) -> str:
    """The body of a single fenced block (```json ... ```), else the stripped text."""
    text = text.strip()
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def parse_json(text: str) -> object:
    """The output parsed as JSON (a fenced block is unwrapped); raises ValueError when it is not."""
    return json.loads(strip_code_fence(text))


def json_valid(output: str, reference: str = "") -> float:
    """1 when the output parses as JSON."""
    try:
        parse_json(output)
    except ValueError:
        return 0.0
    return 1.0


def output_length(output: str, reference: str = "") -> float:
    """Length of the output in characters (stripped)."""
    return float(len(output.strip()))


PER_ITEM: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "token_f1": token_f1,
    "json_valid": json_valid,
    "output_length": output_length,
}


@dataclass(frozen=True)
class MetricTable:
    """Per-item values of one metric and how to aggregate (weighted) sums of them into the metric.

    `values` is (items, columns); `aggregate` maps column sums (…, columns) to the metric value, with
    the item count as second argument. Resampling items and summing their rows gives the bootstrap.
    """

    name: str
    values: np.ndarray
    aggregate: Callable[[np.ndarray, int], np.ndarray]
    per_item: np.ndarray
    """One number per item for the paired win/loss count (the score, or classification correctness)."""

    def value(self) -> float:
        return float(self.aggregate(self.values.sum(axis=0), len(self.values)))

    def subset(self, rows: list[int]) -> MetricTable:
        """The same metric over some of the items (a slice)."""
        return MetricTable(self.name, self.values[rows], self.aggregate, self.per_item[rows])


def _mean(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / max(n, 1)


def mean_table(name: str, scores: list[float]) -> MetricTable:
    """A metric that is the mean of per-item scores."""
    arr = np.asarray(scores, dtype=float)
    return MetricTable(name, arr.reshape(-1, 1), _mean, arr)


def class_labels(references: list[str]) -> list[str]:
    """The label set: the distinct normalised references, sorted."""
    return sorted({normalize(r) for r in references})


def classification_tables(outputs: list[str], references: list[str], labels: list[str]) -> dict[str, MetricTable]:
    """Macro precision, recall and F1 over `labels`; an output outside the labels is a miss.

    A label with no support and no prediction in a sample scores 0 (sklearn's zero_division=0).
    """
    k = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    values = np.zeros((len(outputs), 3 * k))
    for row, (out, ref) in enumerate(zip(outputs, references)):
        pred, true = index.get(normalize(out)), index.get(normalize(ref))
        if pred is not None and pred == true:
            values[row, pred] = 1  # true positive
            continue
        if pred is not None:
            values[row, k + pred] = 1  # false positive
        if true is not None:
            values[row, 2 * k + true] = 1  # false negative
    correct = values[:, :k].sum(axis=1)

    def parts(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tp, fp, fn = sums[..., :k], sums[..., k : 2 * k], sums[..., 2 * k :]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.nan_to_num(tp / (tp + fp))
            recall = np.nan_to_num(tp / (tp + fn))
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        return precision, recall, f1

    return {
        "precision": MetricTable("precision", values, lambda s, n: parts(s)[0].mean(axis=-1), correct),
        "recall": MetricTable("recall", values, lambda s, n: parts(s)[1].mean(axis=-1), correct),
        "macro_f1": MetricTable("macro_f1", values, lambda s, n: parts(s)[2].mean(axis=-1), correct),
    }


def metric_tables(names: list[str], outputs: list[str], references: list[str], labels: list[str]) -> dict[str, MetricTable]:
    """The tables of the requested built-in metric names (`classification` expands to three)."""
    tables: dict[str, MetricTable] = {}
    for name in names:
        if name == "classification" or name in CLASSIFICATION_METRICS:
            tables.update(classification_tables(outputs, references, labels))
        elif name in PER_ITEM:
            fn = PER_ITEM[name]
            tables[name] = mean_table(name, [fn(o, r) for o, r in zip(outputs, references)])
        else:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join((*MEAN_METRICS, 'classification'))}")
    return tables

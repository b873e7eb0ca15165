"""Kubernetes label-selector matching, for a queue's namespaceSelector."""

from __future__ import annotations

from collections.abc import Mapping

from finetune_api.common import LabelSelector


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """True when `labels` satisfy the selector (`matchLabels` and every `matchExpressions` entry).

    No selector, or an empty one, matches everything, as in Kubernetes.
    """
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.match_expressions or []:
        values = set(expr.values or [])
        present = expr.key in labels
        if expr.operator == "In" and not (present and labels[expr.key] in values):
            return False
        if expr.operator == "NotIn" and present and labels[expr.key] in values:
            return False
        if expr.operator == "Exists" and not present:
            return False
        if expr.operator == "DoesNotExist" and present:
            return False
    return True

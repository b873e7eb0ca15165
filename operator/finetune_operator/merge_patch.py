"""JSON merge patches (RFC 7386) between two documents: how status is written.

Status is built as a pydantic status model and dumped (`to_api()`: camelCase, no unset fields); the
write is the merge patch that turns what is stored into that dump, so a field the model leaves unset is
removed (`null`), and one that did not change is not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def diff(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `current` into `desired` (empty when they are equal)."""
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = diff(old, value)
            if nested:
                patch[key] = nested
        elif old != value or key not in current:
            patch[key] = value
    return patch


def apply(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`current` after the API server applies merge patch `patch` (null removes, dicts merge)."""
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            old = out.get(key)
            out[key] = apply(old if isinstance(old, Mapping) else {}, value)
        else:
            out[key] = value
    return out

"""Hypothesis strategies for FineTuneJob manifests, derived from the pydantic models' fields and constraints
(types, literals, bounds, patterns, lengths), so a new field is generated without touching this file.

Free-form strings (no pattern) are drawn from a plain alphabet and kept short, and free-form maps
(node selectors, JSON schemas) are left out: the property is about what the schema admits, and a
Kubernetes label key is not something the schema constrains today (see the report of issue 14).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

from finetune_api.job import FineTuneJobSpec, ObjectMeta

PLAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, attr, None)
            if value is not None:
                out[attr] = value
    return out


def for_annotation(tp: Any, metadata: list[Any]) -> st.SearchStrategy[Any] | None:
    """A strategy for one field's values in wire form; None for fields left out (free-form maps)."""
    c = _constraints(metadata)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return for_annotation(args[0], [*metadata, *args[1:], *getattr(args[1], "metadata", [])])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return for_annotation(options[0], metadata) if len(options) == 1 else None
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        item = for_annotation(args[0], [])
        if item is None:
            return None
        return st.lists(item, min_size=c.get("min_length", 0), max_size=min(c.get("max_length", 3), 3))
    if origin is dict or tp is dict:
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return for_model(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        low = c.get("ge", c["gt"] + 1 if "gt" in c else 0)
        high = c.get("le", c["lt"] - 1 if "lt" in c else low + 1000)
        return st.integers(low, min(high, low + 1000))
    if tp is float:
        low = c.get("ge", c.get("gt", 0.0))
        high = c.get("le", c.get("lt", low + 1000.0))
        return st.floats(low, high, exclude_min="gt" in c, exclude_max="lt" in c, allow_nan=False, allow_infinity=False)
    if tp is str:
        if "pattern" in c:
            size = c.get("max_length", 64)
            return st.from_regex(c["pattern"], fullmatch=True).filter(lambda s: len(s) <= size)
        return PLAIN
    raise TypeError(f"no strategy for {tp!r}")


def for_model(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of `model` in wire form (camelCase): required fields always, the others sometimes."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in model.model_fields.items():
        strategy = for_annotation(field.annotation, list(field.metadata))
        if strategy is None:
            continue
        (required if field.is_required() else optional)[field.alias or name] = strategy
    return st.fixed_dictionaries(required, optional=optional)


def job_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Whole FineTuneJob manifests, as a user would write them."""
    name = for_annotation(str, list(ObjectMeta.model_fields["name"].metadata))
    return st.builds(
        lambda n, spec: {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": n}, "spec": spec},
        name,
        for_model(FineTuneJobSpec),
    )

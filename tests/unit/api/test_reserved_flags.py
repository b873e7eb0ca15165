"""The reserved vLLM flags come from the contract module and match the installed vLLM's own parser."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from finetune_api.contract.vllm_flags import MANAGED_FLAGS, RESERVED_FLAGS, SHORT_FLAGS

pytestmark = pytest.mark.unit


def _option_strings() -> list[tuple[str, ...]]:
    """Option strings of every `add_argument` call of vLLM's engine arguments, where its short aliases are
    declared (server flags are generated from dataclasses, without aliases). Read from source: importing
    vLLM takes tens of seconds."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin, "vLLM is not installed"
    root = Path(spec.origin).parent
    groups = []
    for source in (root / "engine" / "arg_utils.py",):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                names = tuple(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
                if names:
                    groups.append(names)
    return groups


def test_short_aliases_of_managed_flags_are_the_ones_vllm_defines() -> None:
    aliases = {
        name: long
        for names in _option_strings()
        for long in names
        if long in MANAGED_FLAGS
        for name in names
        if not name.startswith("--")
    }
    assert aliases == SHORT_FLAGS


def test_reserved_flags_cover_managed_flags_and_their_aliases() -> None:
    assert MANAGED_FLAGS | set(SHORT_FLAGS) <= set(RESERVED_FLAGS)
    assert "--config" in RESERVED_FLAGS

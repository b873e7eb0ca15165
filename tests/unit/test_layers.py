"""The package layering (DESIGN.md §2): finetune_api at the bottom (pydantic and the standard library
only), the operator and the trainer each on top of it and blind to each other, finetune_cli on top of
all. Read from the source with `ast`, so an import inside a function counts as much as one at the top;
and proven on the real interpreter: importing the operator's entry point loads no ML stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "finetune_api": ROOT / "api" / "finetune_api",
    "finetune_operator": ROOT / "operator" / "finetune_operator",
    "finetune_trainer": ROOT / "trainer" / "finetune_trainer",
    "finetune_cli": ROOT / "cli" / "finetune_cli",
}
API_THIRD_PARTY = {"pydantic", "pydantic_core", "typing_extensions"}
# Which of our own packages each package may import (itself included).
ALLOWED_OWN = {
    "finetune_api": {"finetune_api"},
    "finetune_operator": {"finetune_api", "finetune_operator"},
    "finetune_trainer": {"finetune_api", "finetune_trainer"},
    "finetune_cli": set(PACKAGES),
}
# What the operator image must not load: the ML stack lives in the trainer image only.
HEAVY = (
    "torch", "transformers", "numpy", "trl", "peft", "datasets", "accelerate", "deepspeed", "finetune_trainer", "finetune_cli",
)


def imports(path: Path, package: str) -> list[tuple[str, int]]:
    """Top-level module names a file imports (absolute, or relative resolved inside `package`), with lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((package if node.level else (node.module or "").split(".")[0], node.lineno))
    return found


def violations(package: str, bad: Callable[[str], bool]) -> list[str]:
    root = PACKAGES[package]
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(root.rglob("*.py"))
        for name, line in imports(path, package)
        if bad(name)
    ]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    forbidden = set(PACKAGES) - ALLOWED_OWN[package]
    found = violations(package, forbidden.__contains__)
    assert not found, f"{package} crosses the layering:\n" + "\n".join(found)


def test_api_imports_pydantic_and_the_standard_library_only() -> None:
    allowed = API_THIRD_PARTY | set(sys.stdlib_module_names) | {"__future__", "finetune_api"}
    found = violations("finetune_api", lambda name: name not in allowed)
    assert not found, "finetune_api must stay installable without yaml, kubernetes or torch:\n" + "\n".join(found)


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from . import x\n\ndef f():\n    import torch.nn\n    from yaml import safe_load\n")
    assert imports(source, "finetune_api") == [("finetune_api", 1), ("torch", 4), ("yaml", 5)]


def test_operator_entry_point_loads_no_ml_stack() -> None:
    """What the operator image runs (`kopf run -m finetune_operator.main`), in a fresh interpreter."""
    probe = f"import json, sys, finetune_operator.main; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []

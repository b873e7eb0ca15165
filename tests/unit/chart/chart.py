"""Running the real `helm` on charts/finetune-operator: the chart tests and the api-tier install share it."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cluster import BIN_DIR, missing_binaries

REPO = Path(__file__).resolve().parents[3]
# FT_CHART_DIR tests another copy of the chart (an unpacked release, a patched checkout).
CHART = Path(os.environ.get("FT_CHART_DIR", REPO / "charts" / "finetune-operator"))
VALUES_DIR = Path(__file__).resolve().parent / "values"
VALUES_SETS = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
RELEASE = "ft"
NAMESPACE = "finetune-system"
# helm's offline commands assume Kubernetes 1.20 unless built with its k8sVersion ldflags; the chart needs
# >= 1.30, and the objects are validated against this version's schemas.
KUBE_VERSION = "1.32.0"


def helm_binary() -> str:
    """`.cache/bin/helm` (scripts/build-controlplane.sh builds it), else one on PATH; skips when neither."""
    found = str(BIN_DIR / "helm") if not missing_binaries(["helm"]) else shutil.which("helm")
    if not found:
        pytest.skip("helm is not built yet: run scripts/build-controlplane.sh (make controlplane)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def values_args(values_set: str | None = None, overrides: dict[str, Any] | None = None, tmp: Path | None = None) -> list[str]:
    """`-f` arguments for a named values set and, written to `tmp`, extra overrides."""
    args: list[str] = []
    if values_set:
        args += ["-f", str(VALUES_DIR / f"{values_set}.yaml")]
    if overrides:
        assert tmp is not None, "overrides need a temp dir to be written to"
        path = tmp / "overrides.yaml"
        path.write_text(yaml.safe_dump(overrides))
        args += ["-f", str(path)]
    return args


def template(values_set: str | None = None, overrides: dict[str, Any] | None = None, tmp: Path | None = None,
             *, include_crds: bool = False) -> list[dict[str, Any]]:
    """The objects `helm template` renders (documents that render empty are dropped)."""
    if overrides is None:
        return copy.deepcopy(_template_of_set(values_set, include_crds))
    return _render(values_args(values_set, overrides, tmp), include_crds)


@functools.cache
def _template_of_set(values_set: str | None, include_crds: bool) -> list[dict[str, Any]]:
    return _render(values_args(values_set), include_crds)


def _render(args: list[str], include_crds: bool) -> list[dict[str, Any]]:
    extra = ["--include-crds"] if include_crds else []
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *extra,
               *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata'].get('name') for o in found]}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The operator container's plain env vars (valueFrom entries are left out)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What RBAC rules grant, as (apiGroup, resource, verb) triples (order and grouping do not matter)."""
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}

"""checkov (its own virtualenv, scripts/checkov.sh) finds no failed Kubernetes check in the rendered chart
or in the children the operator renders for every example, and no failed Dockerfile check; the findings
accepted on purpose are the ones listed, with reasons, in .checkov.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .chart import REPO, helm_binary

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def test_every_accepted_finding_has_a_reason() -> None:
    text = (REPO / ".checkov.yaml").read_text()
    skipped = yaml.safe_load(text)["skip-check"]
    assert skipped, "nothing is skipped: remove the file's list instead"
    for check in skipped:
        comment = re.search(rf"((?:\n  #[^\n]*)+)\n  - {re.escape(check)}\n", text)
        assert comment and len(comment.group(1)) > 80, f"{check} is skipped without a reason"


def failed_checks(report: str) -> dict[str, set[str]]:
    """`check id: title` -> the resources (`file: kind.namespace.name`) it failed on, from checkov's compact CLI output."""
    failed: dict[str, set[str]] = {}
    for block in report.split("\nCheck: ")[1:]:
        resource = re.search(r"FAILED for resource: (\S+)", block)
        where = re.search(r"File: /(\S+?):", block)
        if resource:
            check = block.splitlines()[0]
            failed.setdefault(check, set()).add(f"{where.group(1) if where else '?'}: {resource.group(1)[:80]}")
    return failed


def test_scan_passes(tmp_path) -> None:
    helm_binary()  # skips with the reason when helm is not built yet
    # the ftctl of the interpreter running these tests: a worktree has no .venv of its own
    ftctl = Path(sys.executable).with_name("ftctl")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "checkov.sh"), str(tmp_path)], capture_output=True,
                          text=True, timeout=900, env={"FTCTL": str(ftctl), **os.environ, "OMP_NUM_THREADS": "1"})
    failed = failed_checks(proc.stdout)
    summary = "\n".join(f"{check} ({len(where)}x), e.g. {sorted(where)[:3]}" for check, where in sorted(failed.items()))
    assert proc.returncode == 0, f"checkov failed ({proc.returncode}):\n{summary or proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    scanned = sorted(p.name for p in (tmp_path / "k8s").glob("*.yaml"))
    assert any(n.startswith("chart-") for n in scanned) and any(n.startswith("children-") for n in scanned)
    assert re.search(r"dockerfile scan results:\s+Passed checks: \d+, Failed checks: 0", proc.stdout), proc.stdout[-3000:]
    assert re.search(r"kubernetes scan results:\s+Passed checks: \d+, Failed checks: 0", proc.stdout), proc.stdout[-3000:]

"""The README's cluster section shows the commands `make cluster-demo` prints, verbatim (the e2e demo test
runs the printed ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness.demo import EXAMPLE, REPO, commands

pytestmark = pytest.mark.unit
README = (REPO / "README.md").read_text()


def command_lines(text: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in text.splitlines()
            if re.match(r"\s*(export |kubectl |ADDRESS=|curl )", line)]


def test_readme_shows_the_commands_the_demo_prints():
    section = README[README.index("`make cluster-demo`"):README.index("## `ftctl`")]
    printed = command_lines(commands("/tmp/ft-cluster-demo-XXXX/cluster/admin.kubeconfig"))
    shown = command_lines(section)
    assert [line.replace(f"{REPO}/", "") for line in printed] == shown
    assert f"kubectl apply -f {EXAMPLE}" in shown and Path(REPO / EXAMPLE).is_file()
    assert re.search(r"^cluster-demo:", (REPO / "Makefile").read_text(), re.M)

"""The README's promises: two set-up commands first, and an API reference that matches the models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finetune_api.apidocs import BEGIN, END, render_api_reference

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_api_reference_matches_the_models() -> None:
    start, end = README.index(BEGIN), README.index(END) + len(END)
    assert README[start:end] + "\n" == render_api_reference(), "README API reference drifted: run `ftctl api-docs --readme README.md`"


def test_first_code_block_is_the_two_setup_commands() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make quickstart", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^quickstart:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci/run").read_text()

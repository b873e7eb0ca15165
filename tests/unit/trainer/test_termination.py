"""The termination message always fits Kubernetes' 4 KiB and is always valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.termination import MAX_BYTES, encode_summary, write_termination_message

pytestmark = pytest.mark.unit


def test_large_summary_is_shortened_to_valid_json() -> None:
    summary = {"ok": False, "error": "x" * 10_000, "data": {"findings": [f"f.jsonl:{i}: FT001" for i in range(1000)], "n": 7}}
    text = encode_summary(summary)
    decoded = json.loads(text)
    assert len(text.encode()) <= MAX_BYTES
    assert decoded["ok"] is False and decoded["data"]["n"] == 7 and decoded["error"].startswith("xxx")
    assert decoded["data"]["findings"][-1].endswith("more")


def test_multibyte_text_counts_bytes() -> None:
    text = encode_summary({"ok": True, "message": "é" * 5000})
    assert len(text.encode()) <= MAX_BYTES and json.loads(text)["ok"] is True


def test_small_summary_is_written_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(target))
    write_termination_message({"ok": True, "phase": "prepare"})
    assert json.loads(target.read_text()) == {"ok": True, "phase": "prepare"}

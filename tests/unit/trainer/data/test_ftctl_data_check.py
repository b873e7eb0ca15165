"""`ftctl data check`: the prepare checks on local files, findings as `file:line: rule-id: message`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finetune_cli.main import main

from .conftest import BAD, QUICKSTART, chat, write_jsonl

pytestmark = pytest.mark.unit
FINDING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<rule>FT\d{3}) [a-z-]+: .+$")


def test_usable_data_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(QUICKSTART / "train.jsonl"), str(QUICKSTART / "eval.jsonl")]) == 0
    out = capsys.readouterr().out
    assert f"{QUICKSTART / 'train.jsonl'}: 400 rows, 400 usable (messages)" in out
    assert out.rstrip().endswith("usable")


def test_every_finding_names_file_line_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    files = [BAD / "FT001-json-parse.jsonl", BAD / "FT004-role.jsonl", BAD / "FT005-role-order.jsonl"]
    assert main(["data", "check", *map(str, files)]) == 2
    lines = capsys.readouterr().out.splitlines()
    findings = [m.groupdict() for m in map(FINDING.match, lines) if m]
    assert {(Path(f["file"]).name, f["line"], f["rule"]) for f in findings if f["rule"] != "FT009"} == {
        ("FT001-json-parse.jsonl", "3", "FT001"),
        ("FT004-role.jsonl", "3", "FT004"),
        ("FT005-role-order.jsonl", "2", "FT005"),
    }
    assert lines[-1] == "NOT usable"


def test_with_a_model_the_token_checks_run(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "yo"), chat(" ".join(["long"] * 80), "x")])
    args = ["data", "check", str(data), "--model", str(tiny_model_dir), "--max-length", "32", "--over-length", "fail"]
    assert main(args) == 2
    assert f"{data}:2: FT013 over-length: " in capsys.readouterr().out
    assert main(["data", "check", str(data), "--max-length", "32", "--over-length", "fail"]) == 0  # structure only


def test_preference_format_for_dpo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    assert main(["data", "check", str(data), "--method", "dpo", "--format", "preference"]) == 0
    assert main(["data", "check", str(data)]) == 2
    assert f"{data}:1: FT016 method-format: preference rows cannot be used for sft" in capsys.readouterr().out


def test_a_parquet_file_with_its_own_column_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "a?", "a": "b"}, {"q": "c?", "a": ""}]), path)
    assert main(["data", "check", str(path), "--column", "prompt=q", "--column", "completion=a"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert f"{path}:2: FT006 empty-content: completion is empty" in lines
    assert f"{path}: 2 rows, 1 usable (prompt_completion), 1 errors, 1 other findings" in lines
    with pytest.raises(SystemExit):
        main(["data", "check", str(path), "--column", "question=q"])
    assert "expected FIELD=COLUMN" in capsys.readouterr().err

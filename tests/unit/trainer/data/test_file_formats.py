"""Parquet files and Hugging Face `datasets` saved to disk go through the same checks as JSONL: the
format is detected from the file (or stated), a column mapping renames the dataset's columns to our
fields, and every finding names the file and the row."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune_api.job import DatasetRef
from finetune_trainer.data import rules
from finetune_trainer.data.prepare import CheckSettings, SplitSource, check_datasets
from finetune_trainer.data.sources import MissingData, read_dataset
from finetune_trainer.evaluation.items import EvalDataError, read_items

from .conftest import write_jsonl

pytestmark = pytest.mark.unit
QA = [{"question": f"What is {i}+{i}?", "answer": str(2 * i), "source": None} for i in range(1, 6)]
"""prompt/completion rows under the dataset's own column names (`source` is an all-null column)."""


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def check(path: Path, purpose: str = "sft", **ref: Any):  # noqa: ANN201 - a SplitResult and its findings
    """The train split of `path` as the prepare phase checks it (structural checks only)."""
    source = SplitSource.of("train", str(path), DatasetRef(uri=str(path), **ref), purpose)  # type: ignore[arg-type]
    method = "sft" if purpose == "eval" else purpose
    outcome = check_datasets([source], CheckSettings(method=method), None)  # type: ignore[arg-type]
    return outcome.splits["train"], outcome.findings


def test_parquet_with_a_column_mapping_reads_as_our_rows(tmp_path: Path) -> None:
    split, findings = check(write_parquet(tmp_path / "qa.parquet", QA), columns={"prompt": "question", "completion": "answer"})
    assert not findings.errors, findings.printable()
    assert (split.rows, split.format) == (5, "prompt_completion")
    assert split.examples[1].prompt == [{"role": "user", "content": "What is 2+2?"}]
    assert split.examples[1].answer == [{"role": "assistant", "content": "4"}]
    assert (split.examples[1].file, split.examples[1].line) == (str(tmp_path / "qa.parquet"), 2)


def test_a_bad_parquet_row_is_named_by_file_and_row(tmp_path: Path) -> None:
    rows = [dict(r) for r in QA]
    rows[3]["answer"] = "   "
    path = write_parquet(tmp_path / "qa.parquet", rows)
    split, findings = check(path, columns={"prompt": "question", "completion": "answer"})
    assert [str(f) for f in findings.errors] == [f"{path}:4: FT006 empty-content: completion is empty"]
    assert len(split.examples) == 4


def test_an_unmapped_column_is_an_unknown_key_on_its_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "qa.parquet", [{**QA[0], "source": "web"}, *QA[1:]])
    _, findings = check(path, columns={"prompt": "question", "completion": "answer"})
    (error,) = findings.errors
    assert (error.rule, error.file, error.line) == (rules.UNKNOWN_KEY, str(path), 1)
    assert "unknown key(s) source" in error.message


def test_parquet_is_detected_by_its_magic_bytes_and_chat_structs_lose_their_nulls(tmp_path: Path) -> None:
    conversations = [
        {"conversation": [{"role": "user", "content": f"hi {i}", "name": None},
                          {"role": "assistant", "content": f"hello {i}", "name": "bot" if i == 0 else None}]}
        for i in range(3)
    ]
    path = write_parquet(tmp_path / "chats.bin", conversations)
    split, findings = check(path, columns={"messages": "conversation"})
    assert not findings.errors, findings.printable()
    assert split.format == "messages"
    assert split.examples[0].answer == [{"role": "assistant", "content": "hello 0", "name": "bot"}]
    assert split.examples[2].conversation == [{"role": "user", "content": "hi 2"}, {"role": "assistant", "content": "hello 2"}]


def test_a_corrupt_parquet_file_is_a_finding_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is no parquet file")
    split, findings = check(path)
    error = findings.errors[0]
    assert (error.rule, error.file, error.line) == (rules.SOURCE, str(path), 0)
    assert "not readable as a Parquet file" in error.message and split.rows == 0


def test_a_directory_mixes_jsonl_and_parquet_files_in_name_order(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [{"prompt": "x?", "completion": "y"}])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "z?", "completion": "w"}])
    assert [(Path(f.name).name, f.format) for f in read_dataset(str(tmp_path))] == [("a.parquet", "parquet"), ("b.jsonl", "jsonl")]
    assert [Path(f.name).name for f in read_dataset(str(tmp_path), "parquet")] == ["a.parquet"]


def test_jsonl_rows_take_the_column_mapping_and_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "a?", "answer": "b"}\n\n{"question": "c?", "answer": ""}\n')
    split, findings = check(path, columns={"prompt": "question", "completion": "answer"})
    assert [str(f) for f in findings.errors] == [f"{path}:3: FT006 empty-content: completion is empty"]
    assert split.rows == 2


def test_a_saved_dataset_is_read_with_its_row_numbers(tmp_path: Path) -> None:
    rows = [{"prompt": r["question"], "chosen": r["answer"], "rejected": "no idea"} for r in QA]
    rows[2]["rejected"] = rows[2]["chosen"]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "pairs"))
    split, findings = check(tmp_path / "pairs", "dpo")
    assert [str(f) for f in findings.errors] == [
        f"{tmp_path / 'pairs'}:3: FT008 identical-pair: chosen and rejected are the same answer: the pair teaches nothing"
    ]
    assert (split.format, len(split.examples)) == ("preference", 4)
    assert split.examples[0].rejected == [{"role": "assistant", "content": "no idea"}]


def test_a_dataset_dict_split_is_named_by_the_spec(tmp_path: Path) -> None:
    saved = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"q": "a?", "a": "b"}]),
        "test": datasets.Dataset.from_list([{"q": "c?", "a": "d"}, {"q": "e?", "a": ""}]),
    }).save_to_disk(str(saved))
    split, findings = check(saved, split="test", fileFormat="saved_dataset", columns={"prompt": "q", "completion": "a"})
    assert [str(f) for f in findings.errors] == [f"{saved / 'test'}:2: FT006 empty-content: completion is empty"]
    assert split.examples[0].reference == "d"
    with pytest.raises(MissingData, match="splits train, test: name one in split"):
        read_dataset(str(saved))
    with pytest.raises(MissingData, match=r"no split 'dev' in this DatasetDict \(it has train, test\)"):
        read_dataset(str(saved), split="dev")


def test_a_stated_file_format_is_enforced(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "qa.parquet", QA)
    with pytest.raises(MissingData, match="is a directory, not a file"):
        read_dataset(str(path), "saved_dataset")
    _, findings = check(path, fileFormat="jsonl")
    first = findings.errors[0]
    assert (first.rule, first.file, first.line) == (rules.JSON_PARSE, str(path), 1)


def test_grpo_and_eval_rows_from_parquet_carry_their_reference(tmp_path: Path) -> None:
    rows = [{"task": f"Add {i} and {i}.", "gold": str(2 * i), "topic": "math"} for i in range(1, 4)]
    path = write_parquet(tmp_path / "tasks.parquet", rows)
    ref = DatasetRef(uri=str(path), columns={"prompt": "task", "reference": "gold", "category": "topic"})  # type: ignore[arg-type]
    split, findings = check(path, "grpo", columns={"prompt": "task", "reference": "gold", "category": "topic"})
    assert not findings.errors, findings.printable()
    assert [ex.reference for ex in split.examples] == ["2", "4", "6"]
    items = read_items(str(path), ref)
    assert items[0].fields == {"prompt": "Add 1 and 1.", "reference": "2", "category": "math"}
    assert items[2].origin == f"{path}:3"
    with pytest.raises(EvalDataError, match=re.escape(f"3 bad eval rows; first: {path}:1: unknown key(s) gold, topic")):
        read_items(str(path), DatasetRef(uri=str(path), columns={"prompt": "task"}))  # type: ignore[arg-type]

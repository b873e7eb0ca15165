"""Dataset locations: files, directories of JSONL, mounted volumes and fsspec stores."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from finetune_trainer.data.sources import MissingData, SourceUnavailable, read_dataset

pytestmark = pytest.mark.unit


def test_directory_is_its_jsonl_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.jsonl").write_text('{"x": 2}\n')
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n')
    (tmp_path / "notes.txt").write_text("ignored")
    files = read_dataset(str(tmp_path))
    assert [Path(f.name).relative_to(tmp_path).as_posix() for f in files] == ["a.jsonl", "b/2.jsonl"]
    assert files[0].lines() == ['{"x": 1}', ""]


def test_fsspec_store_directory() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe({"/ftp-test/ds/part-1.jsonl": b'{"a": 1}\n', "/ftp-test/ds/part-0.jsonl": b'{"a": 0}\n'})
    try:
        files = read_dataset("memory://ftp-test/ds")
        assert [f.data for f in files] == [b'{"a": 0}\n', b'{"a": 1}\n']
        with pytest.raises(MissingData, match="no such file"):
            read_dataset("memory://ftp-test/missing.jsonl")
    finally:
        fs.rm("/ftp-test", recursive=True)


def test_missing_volume_path_names_the_mount_path() -> None:
    with pytest.raises(MissingData, match="/mnt/pvc/no-such-claim/train.jsonl"):
        read_dataset("pvc://no-such-claim/train.jsonl")


def test_store_without_a_backend_is_infrastructure() -> None:
    with pytest.raises(SourceUnavailable, match="no fsspec backend"):
        read_dataset("nosuchproto://bucket/train.jsonl")


def test_fsspec_store_parquet_files_are_detected_and_saved_datasets_refused() -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": "a?", "completion": "b"}]), buffer)
    fs = fsspec.filesystem("memory")
    fs.pipe({"/pq-test/ds/part-0.parquet": buffer.getvalue(), "/pq-test/ds/part-1.jsonl": b'{"a": 1}\n',
             "/pq-test/saved/state.json": b"{}", "/pq-test/saved/data-00000-of-00001.arrow": b""})
    try:
        files = read_dataset("memory://pq-test/ds")
        assert [f.format for f in files] == ["parquet", "jsonl"]
        assert list(files[0].rows()) == [(1, {"prompt": "a?", "completion": "b"})]
        with pytest.raises(MissingData, match="read from a volume or the source cache"):
            read_dataset("memory://pq-test/saved")
    finally:
        fs.rm("/pq-test", recursive=True)

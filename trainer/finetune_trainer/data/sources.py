"""Where datasets are read from, and the one place their rows are read: JSON Lines, Parquet and
Hugging Face `datasets` saved to disk, from local paths, mounted volumes (`pvc://`) and the source
cache (the fetch step's copy of `s3://` and `hf://`), or over fsspec (`hf://`) when not fetched.

A dataset is one file, a directory of `*.jsonl` / `*.parquet` files (in name order), or a directory
written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (one split of it). The format is
detected from the file (a saved dataset's metadata, Parquet's magic bytes or name) unless the spec
states it. Every file yields numbered rows: a JSONL row's number is its line, a Parquet or saved
dataset row's number its 1-based position, so every finding names the file and the row.
A location that does not exist is the user's mistake (exit 1); a store that cannot be reached is
infrastructure (exit 2, retried).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from finetune_api.job import DatasetRef
from finetune_api.resolved import uri_to_path

FileFormat = Literal["jsonl", "parquet", "saved_dataset"]
DeclaredFileFormat = Literal["auto", "jsonl", "parquet", "saved_dataset"]
SUFFIXES: dict[str, FileFormat] = {".jsonl": "jsonl", ".parquet": "parquet"}
PARQUET_MAGIC = b"PAR1"
DATASET_STATE = "state.json"
"""Written by `Dataset.save_to_disk` next to its Arrow files."""
DATASET_DICT = "dataset_dict.json"
"""Written by `DatasetDict.save_to_disk`: `{"splits": [...]}`, one sub-directory per split."""


class MissingData(Exception):
    """The dataset location does not exist or holds no data file (a user error)."""


class SourceUnavailable(Exception):
    """The store could not be read (network, permissions, missing fsspec backend): infrastructure."""


class UnreadableFile(Exception):
    """A file is not valid in its format (a corrupt Parquet file, a damaged saved dataset): the user's."""


@dataclass(frozen=True, slots=True)
class NotJson:
    """A JSONL line that does not parse, with the parser's message."""

    message: str


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One data file as shown in findings: its bytes (JSONL, Parquet), or the directory of one split
    of a saved dataset."""

    name: str
    data: bytes = b""
    format: FileFormat = "jsonl"
    directory: Path | None = None
    """saved_dataset: the split's directory (its Arrow files and `state.json`)."""

    @property
    def sha256(self) -> str:
        if self.directory is None:
            return hashlib.sha256(self.data).hexdigest()
        digest = hashlib.sha256()
        for file in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(self.directory)}\0{hashlib.sha256(file.read_bytes()).hexdigest()}\n".encode())
        return digest.hexdigest()

    def lines(self) -> Sequence[str | bytes]:
        """A JSONL file's lines without their newline (a final newline adds no empty line); as bytes
        when the file is not UTF-8, so that the JSON parser reports the bad line."""
        try:
            lines: list[str] | list[bytes] = self.data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = self.data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        return lines

    def rows(self, columns: Mapping[str, str] | None = None) -> Iterator[tuple[int, Any]]:
        """(row number, row) for every row: the parsed JSON value (NotJson when a line does not parse)
        or a table row as a dict of plain JSON values, a null cell an absent key. `columns` maps our
        field names to the dataset's own column names; the row comes out under ours. Raises
        UnreadableFile when the file cannot be read in its format."""
        if self.format == "jsonl":
            rows: Iterator[tuple[int, Any]] = self._jsonl_rows()
        else:
            rows = enumerate((_plain_row(r) for r in self._table_rows()), start=1)
        if not columns:
            yield from rows
            return
        for number, row in rows:
            yield number, rename_columns(row, columns) if isinstance(row, dict) else row

    def _jsonl_rows(self) -> Iterator[tuple[int, Any]]:
        loads = json.loads
        for number, raw in enumerate(self.lines(), start=1):
            if not raw.strip():
                continue
            try:
                yield number, loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                yield number, NotJson(f"not valid JSON: {exc}")

    def _table_rows(self) -> Iterator[dict[str, Any]]:
        """The rows of a Parquet file or a saved dataset's split, a record batch at a time."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if self.directory is not None:
                import datasets

                table = datasets.load_from_disk(str(self.directory)).data.table
                batches: Iterator[Any] = iter(table.to_batches())
            else:
                batches = pq.ParquetFile(io.BytesIO(self.data)).iter_batches()
            for batch in batches:
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
            kind = "a saved dataset" if self.directory is not None else "a Parquet file"
            raise UnreadableFile(f"not readable as {kind}: {type(exc).__name__}: {exc}") from exc


def column_mapping(ref: DatasetRef) -> dict[str, str]:
    """`spec.datasets.*.columns` as our field name → the dataset's column name (mapped fields only)."""
    return ref.columns.model_dump(exclude_none=True) if ref.columns is not None else {}


def rename_columns(row: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The row with each mapped column under our field name (`columns`: ours → the dataset's)."""
    theirs = {source: ours for ours, source in columns.items()}
    return {theirs.get(key, key): value for key, value in row.items()}


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: nested nulls dropped (Arrow gives every struct every field),
    dates, decimals and bytes as strings (rows are kept as JSON for graders)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in row.items() if v is not None}


def file_format_of(name: str, head: bytes, declared: DeclaredFileFormat) -> FileFormat:
    """A single file's format: as declared, else Parquet by its magic bytes or name, else JSONL."""
    if declared in ("jsonl", "parquet"):
        return declared
    return "parquet" if head.startswith(PARQUET_MAGIC) or name.endswith(".parquet") else "jsonl"


def _suffixes(declared: DeclaredFileFormat) -> tuple[str, ...]:
    return tuple(s for s, fmt in SUFFIXES.items() if declared in ("auto", fmt))


def _saved_splits(path: Path, split: str | None, shown: str) -> list[SourceFile]:
    """The split of a saved Dataset (the directory itself) or DatasetDict (`split`, or its only one)."""
    if (path / DATASET_STATE).is_file():
        if split is not None:
            raise MissingData(f"{shown}: split {split!r} given, but this is a single Dataset saved to disk, not a DatasetDict")
        return [SourceFile(shown, format="saved_dataset", directory=path)]
    try:
        splits = [str(s) for s in json.loads((path / DATASET_DICT).read_text())["splits"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MissingData(f"{shown}: {DATASET_DICT} is not a DatasetDict's ({exc})") from exc
    if split is None:
        if len(splits) != 1:
            raise MissingData(f"{shown}: a DatasetDict with splits {', '.join(splits)}: name one in split")
        split = splits[0]
    if split not in splits or not (path / split / DATASET_STATE).is_file():
        raise MissingData(f"{shown}: no split {split!r} in this DatasetDict (it has {', '.join(splits)})")
    return [SourceFile(str(Path(shown) / split), format="saved_dataset", directory=path / split)]


def _is_saved_dataset(path: Path) -> bool:
    return (path / DATASET_STATE).is_file() or (path / DATASET_DICT).is_file()


def _remote_path(uri: str) -> tuple[str, str]:
    """Split a URI into its fsspec protocol and path; `hf://org/name/...` means a hub dataset."""
    protocol, _, path = uri.partition("://")
    if protocol == "hf" and not path.startswith(("datasets/", "spaces/", "models/")):
        path = "datasets/" + path
    return protocol, path


def _read_remote(uri: str, declared: DeclaredFileFormat) -> list[SourceFile]:
    import fsspec

    protocol, path = _remote_path(uri)
    try:
        fs = fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        raise SourceUnavailable(f"{uri}: no fsspec backend for {protocol}:// ({exc})") from exc
    suffixes = _suffixes(declared)
    try:
        if not fs.exists(path):
            raise MissingData(f"{uri}: no such file or directory")
        if fs.isdir(path):
            if declared == "saved_dataset" or any(fs.exists(f"{path}/{n}") for n in (DATASET_STATE, DATASET_DICT)):
                raise MissingData(f"{uri}: a dataset saved to disk is read from a volume or the source cache, not over {protocol}://")
            names = sorted(p for p in fs.find(path) if p.endswith(suffixes))
            if not names:
                raise MissingData(f"{uri}: directory holds no {' or '.join(suffixes)} file")
        else:
            names = [path]
        files = []
        for name in names:
            data = fs.cat_file(name)
            files.append(SourceFile(f"{protocol}://{name}", data, file_format_of(name, data[:4], declared)))
        return files
    except (MissingData, SourceUnavailable):
        raise
    except FileNotFoundError as exc:
        raise MissingData(f"{uri}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any store failure (network, auth) is infrastructure
        raise SourceUnavailable(f"{uri}: {type(exc).__name__}: {exc}") from exc


def _read_local(path: Path, shown: str, declared: DeclaredFileFormat, split: str | None) -> list[SourceFile]:
    try:
        if path.is_dir():
            if declared in ("auto", "saved_dataset") and _is_saved_dataset(path):
                return _saved_splits(path, split, shown)
            if declared == "saved_dataset":
                raise MissingData(f"{shown}: not a dataset saved with save_to_disk (no {DATASET_STATE} or {DATASET_DICT})")
            suffixes = _suffixes(declared)
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
            if not files:
                raise MissingData(f"{shown}: directory holds no {' or '.join(suffixes)} file")
            return [_file(p, str(p), declared) for p in files]
        if not path.exists():
            raise MissingData(f"{shown}: no such file or directory")
        if declared == "saved_dataset":
            raise MissingData(f"{shown}: a dataset saved with save_to_disk is a directory, not a file")
        return [_file(path, shown, declared)]
    except PermissionError as exc:
        raise SourceUnavailable(f"{shown}: {exc}") from exc
    except (MissingData, SourceUnavailable):
        raise
    except OSError as exc:
        raise SourceUnavailable(f"{shown}: {exc}") from exc


def _file(path: Path, shown: str, declared: DeclaredFileFormat) -> SourceFile:
    data = path.read_bytes()
    return SourceFile(shown, data, file_format_of(path.name, data[:4], declared))


def read_dataset(uri: str, file_format: DeclaredFileFormat = "auto", split: str | None = None) -> list[SourceFile]:
    """Every data file of a dataset location, in a stable order (`split`: of a saved DatasetDict)."""
    path = uri_to_path(uri)
    if "://" in path:
        if split is not None:
            raise MissingData(f"{uri}: a DatasetDict split is read from a volume or the source cache, not over fsspec")
        return _read_remote(path, file_format)
    return _read_local(Path(path), path, file_format, split)


def fingerprint(files: list[SourceFile]) -> str:
    """Content hash of a dataset (names matter only through their order)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.sha256.encode())
    return digest.hexdigest()

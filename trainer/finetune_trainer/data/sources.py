"""Where datasets are read from: local paths, mounted volumes (`pvc://`), `s3://` and `hf://` via fsspec.

A dataset is one JSONL file or a directory of them (`*.jsonl`, in name order). Files are read whole:
the bytes are hashed for the prepared dataset's content address and split into lines for the checks.
A location that does not exist is the user's mistake (exit 1); a store that cannot be reached is
infrastructure (exit 2, retried).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune_api.resolved import uri_to_path

JSONL_SUFFIX = ".jsonl"


class MissingData(Exception):
    """The dataset location does not exist or holds no JSONL file (a user error)."""


class SourceUnavailable(Exception):
    """The store could not be read (network, permissions, missing fsspec backend): infrastructure."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One JSONL file's name (as shown in findings) and its bytes."""

    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def lines(self) -> Sequence[str | bytes]:
        """The file's lines without their newline (a final newline adds no empty line); as bytes when
        the file is not UTF-8, so that the JSON parser reports the bad line."""
        try:
            lines: list[str] | list[bytes] = self.data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = self.data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        return lines


def _remote_path(uri: str) -> tuple[str, str]:
    """Split a URI into its fsspec protocol and path; `hf://org/name/...` means a hub dataset."""
    protocol, _, path = uri.partition("://")
    if protocol == "hf" and not path.startswith(("datasets/", "spaces/", "models/")):
        path = "datasets/" + path
    return protocol, path


def _read_remote(uri: str) -> list[SourceFile]:
    import fsspec

    protocol, path = _remote_path(uri)
    try:
        fs = fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        raise SourceUnavailable(f"{uri}: no fsspec backend for {protocol}:// ({exc})") from exc
    try:
        if not fs.exists(path):
            raise MissingData(f"{uri}: no such file or directory")
        if fs.isdir(path):
            names = sorted(p for p in fs.find(path) if p.endswith(JSONL_SUFFIX))
            if not names:
                raise MissingData(f"{uri}: directory holds no {JSONL_SUFFIX} file")
        else:
            names = [path]
        return [SourceFile(f"{protocol}://{name}", fs.cat_file(name)) for name in names]
    except (MissingData, SourceUnavailable):
        raise
    except FileNotFoundError as exc:
        raise MissingData(f"{uri}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any store failure (network, auth) is infrastructure
        raise SourceUnavailable(f"{uri}: {type(exc).__name__}: {exc}") from exc


def _read_local(path: Path, shown: str) -> list[SourceFile]:
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob(f"*{JSONL_SUFFIX}") if p.is_file())
            if not files:
                raise MissingData(f"{shown}: directory holds no {JSONL_SUFFIX} file")
            return [SourceFile(str(p), p.read_bytes()) for p in files]
        if not path.exists():
            raise MissingData(f"{shown}: no such file or directory")
        return [SourceFile(shown, path.read_bytes())]
    except PermissionError as exc:
        raise SourceUnavailable(f"{shown}: {exc}") from exc
    except (MissingData, SourceUnavailable):
        raise
    except OSError as exc:
        raise SourceUnavailable(f"{shown}: {exc}") from exc


def read_dataset(uri: str) -> list[SourceFile]:
    """Every JSONL file of a dataset location, in a stable order."""
    path = uri_to_path(uri)
    if "://" in path:
        return _read_remote(path)
    return _read_local(Path(path), path)


def fingerprint(files: list[SourceFile]) -> str:
    """Content hash of a dataset (names matter only through their order)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.sha256.encode())
    return digest.hexdigest()

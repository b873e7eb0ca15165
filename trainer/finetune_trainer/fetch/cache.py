"""The content-addressed source cache: one directory per resolved identity, filled once, read-only after.

Layout under the root: `<key>/files/` (the source's files), `<key>/entry.json` (identity, bytes, last
use); `holders/<holder>.json` lists the keys a running or serving job uses, and eviction never removes
those. An entry appears only whole: it is filled in a temporary directory and renamed into place under
a per-key lock, so concurrent fetches of one identity download it once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from finetune_api.contract.sources import cache_key

from ..atomic_json import write_json_atomic

HOLDERS = "holders"


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of a file or a directory tree."""
    if path.is_file():
        return path.stat().st_size, 1
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def _read_only(path: Path) -> None:
    """Files of a finished entry are read-only: no phase may change a copy other jobs share."""
    for file in [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()):
        file.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


class SourceCache:
    """One cache root; `max_bytes` None means no limit."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def entry(self, identity: str) -> Path:
        return self.root / cache_key(identity)

    def lookup(self, identity: str) -> Path | None:
        """The cached files of `identity` (its last use refreshed), or None."""
        entry = self.entry(identity)
        if not (entry / "entry.json").is_file():
            return None
        os.utime(entry / "entry.json")
        return entry / "files"

    @contextmanager
    def _locked(self, identity: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{cache_key(identity)}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def fill(self, identity: str, download: Callable[[Path], int]) -> tuple[Path, int]:
        """The cached files of `identity`, downloading them with `download(files_dir) -> bytes read`
        when absent; returns (files dir, bytes downloaded: 0 on a hit)."""
        with self._locked(identity):
            hit = self.lookup(identity)
            if hit is not None:
                return hit, 0
            entry = self.entry(identity)
            tmp = self.root / f".tmp-{entry.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "files").mkdir(parents=True)
            downloaded = download(tmp / "files")
            size, files = tree_bytes(tmp / "files")
            _read_only(tmp / "files")
            write_json_atomic(tmp / "entry.json", {"identity": identity, "bytes": size, "files": files})
            tmp.rename(entry)
            return entry / "files", downloaded

    def hold(self, holder: str, identities: list[str]) -> None:
        """Mark the entries `holder` (a job) uses; eviction skips them until `release`."""
        write_json_atomic(self.root / HOLDERS / f"{holder}.json", sorted(cache_key(i) for i in identities))

    def release(self, holder: str) -> None:
        (self.root / HOLDERS / f"{holder}.json").unlink(missing_ok=True)

    def _held(self) -> set[str]:
        held: set[str] = set()
        for path in (self.root / HOLDERS).glob("*.json"):
            try:
                held.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return held

    def evict(self) -> list[str]:
        """Remove least recently used entries no job holds until the cache fits `max_bytes`; returns
        the identities removed. Held entries stay even when the cache is then still too large."""
        if self.max_bytes is None or not self.root.is_dir():
            return []
        entries = []
        for meta in self.root.glob("*/entry.json"):
            try:
                record = json.loads(meta.read_text())
                entries.append((meta.stat().st_mtime, meta.parent, str(record["identity"]), int(record["bytes"])))
            except (OSError, ValueError, KeyError):
                continue
        total = sum(e[3] for e in entries)
        held = self._held()
        removed: list[str] = []
        for _, entry, identity, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if entry.name in held:
                continue
            with self._locked(identity):
                (entry / "entry.json").unlink()
                for path in entry.rglob("*"):
                    if path.is_dir():
                        path.chmod(stat.S_IRWXU)
                shutil.rmtree(entry)
            total -= size
            removed.append(identity)
        return removed


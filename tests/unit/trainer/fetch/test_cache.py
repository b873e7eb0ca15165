"""The source cache: entries appear whole, are read-only, are filled once, and eviction keeps what a
running or serving job holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from finetune_trainer.fetch.cache import SourceCache

pytestmark = pytest.mark.unit


def writer(size: int, calls: list[str], name: str):
    def download(target: Path) -> int:
        calls.append(name)
        (target / "weights.bin").write_bytes(b"x" * size)
        return size

    return download


def test_an_identity_is_downloaded_once_and_read_only(tmp_path: Path) -> None:
    cache, calls = SourceCache(tmp_path), []
    first, got = cache.fill("hf:model/a@1", writer(10, calls, "a"))
    again, again_got = cache.fill("hf:model/a@1", writer(10, calls, "a"))
    assert (first, got) == (again, 10) and again_got == 0 and calls == ["a"]
    assert not (first / "weights.bin").stat().st_mode & stat.S_IWUSR


def test_a_failed_download_leaves_no_entry(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)

    def broken(target: Path) -> int:
        (target / "part").write_bytes(b"half")
        raise ConnectionError("store went away")

    with pytest.raises(ConnectionError):
        cache.fill("s3:b/p#sha256:1", broken)
    assert cache.lookup("s3:b/p#sha256:1") is None


def test_eviction_removes_least_recently_used_entries_no_job_holds(tmp_path: Path) -> None:
    cache, calls = SourceCache(tmp_path, max_bytes=250), []
    for i, name in enumerate(("old-held", "old", "new")):
        files, _ = cache.fill(name, writer(100, calls, name))
        os.utime(files.parent / "entry.json", (1000 + i, 1000 + i))
    cache.hold("ns.serving-job", ["old-held"])
    assert cache.evict() == ["old"]
    assert cache.lookup("old-held") is not None and cache.lookup("new") is not None

    cache.max_bytes = 50  # still over the limit: the held entry stays all the same
    assert cache.evict() == ["new"] and cache.lookup("old-held") is not None
    cache.release("ns.serving-job")
    assert cache.evict() == ["old-held"]


def test_the_release_step_drops_one_jobs_hold_and_evicts_what_no_job_holds_any_more(tmp_path: Path) -> None:
    """Two jobs share a base (one entry); one also has its own dataset. Releasing it frees its dataset
    at once; the shared base stays while the other job holds it. Releasing twice changes nothing."""
    from finetune_api.contract.sources import cache_holder, release_module_args
    from finetune_trainer.fetch.release import main

    cache, calls = SourceCache(tmp_path), []
    for identity in ("s3:models/base#sha256:1", "s3:data/a#sha256:2"):
        cache.fill(identity, writer(100, calls, identity))
    cache.hold(cache_holder("team", "a"), ["s3:models/base#sha256:1", "s3:data/a#sha256:2"])
    cache.hold(cache_holder("team", "b"), ["s3:models/base#sha256:1"])
    args = release_module_args(str(tmp_path), cache_holder("team", "a"), 1)[2:]
    assert main(args) == 0
    assert cache.lookup("s3:data/a#sha256:2") is None and cache.lookup("s3:models/base#sha256:1") is not None
    assert main(args) == 0 and cache.lookup("s3:models/base#sha256:1") is not None
    assert main(release_module_args(str(tmp_path), cache_holder("team", "b"), 1)[2:]) == 0
    assert cache.lookup("s3:models/base#sha256:1") is None

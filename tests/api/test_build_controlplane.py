"""scripts/build-controlplane.sh on a shared cache: a second run waits for the build that holds the lock
and then builds nothing; the harness counts a binary as built only once its stamp is written. Needs the
built control plane (a copy of the cache whose binaries are links to the real ones; real `go`)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import cluster
from tests.harness.cluster import BIN_DIR, CONTROLPLANE_BINARIES, REPO, missing_binaries

pytestmark = pytest.mark.api


@pytest.fixture
def cache_copy(tmp_path: Path) -> Path:
    """A cache holding the built binaries (links) and their stamps, without the Go caches."""
    if missing_binaries() or not shutil.which("go"):
        pytest.skip("needs the built control plane and go: run scripts/build-controlplane.sh")
    bin_dir = tmp_path / "cache" / "bin"
    bin_dir.mkdir(parents=True)
    for name in CONTROLPLANE_BINARIES:
        (bin_dir / name).symlink_to(BIN_DIR / name)
        shutil.copy(BIN_DIR / f".{name}.stamp", bin_dir / f".{name}.stamp")
    return tmp_path / "cache"


def test_a_second_build_waits_for_the_first_and_builds_nothing(cache_copy: Path) -> None:
    with open(cache_copy / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build in progress
        proc = subprocess.Popen(["bash", str(REPO / "scripts" / "build-controlplane.sh")], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "FT_CACHE_DIR": str(cache_copy)})
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "another build holds" in first and "waiting" in first, first
        time.sleep(1)
        assert proc.poll() is None, "the second run went on while the lock was held"
    out = first + proc.stdout.read()
    assert proc.wait(120) == 0, out
    assert "building" not in out, out
    for name in CONTROLPLANE_BINARIES:
        assert f"{name} up to date" in out, out


def test_a_binary_without_its_stamp_is_not_built(cache_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "BIN_DIR", cache_copy / "bin")
    assert missing_binaries() == []
    (cache_copy / "bin" / ".kueue.stamp").unlink()  # a build that stopped before its stamp
    assert missing_binaries() == ["kueue"]
    assert missing_binaries(cluster.CLUSTER_BINARIES) == []
    monkeypatch.setenv("FT_SKIP_BUILD", "1")
    assert "not built: kueue" in cluster.build()
    (cache_copy / "bin" / "kwok").unlink()
    with pytest.raises(cluster.ClusterError, match="kwok not built"):
        cluster.build()


def test_a_tool_version_the_tools_module_does_not_require_is_refused(cache_copy: Path, tmp_path: Path) -> None:
    """kwok, helm and coredns build from tests/tools/go.mod; the script's version constants (bench and
    the harness name them too) must be the releases it requires, or the script stops before building."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    script, n = re.subn(r"^KWOK_VERSION=\S+", "KWOK_VERSION=v0.0.1",
                        (REPO / "scripts" / "build-controlplane.sh").read_text(), flags=re.M)
    assert n == 1
    (repo / "scripts" / "build-controlplane.sh").write_text(script)
    shutil.copy(REPO / "scripts" / "setup-disk.sh", repo / "scripts")
    shutil.copytree(REPO / "tests" / "controlplane", repo / "tests" / "controlplane")
    shutil.copytree(REPO / "tests" / "tools", repo / "tests" / "tools")
    proc = subprocess.run(["bash", str(repo / "scripts" / "build-controlplane.sh")], text=True,
                          capture_output=True, env={**os.environ, "FT_CACHE_DIR": str(cache_copy)}, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tests/tools/go.mod does not require sigs.k8s.io/kwok v0.0.1" in proc.stderr
    assert "building" not in proc.stdout and "up to date" not in proc.stdout, proc.stdout

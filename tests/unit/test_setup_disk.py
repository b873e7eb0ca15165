"""The set-up's disk check (scripts/setup-disk.sh): on a filesystem without the space a cold set-up needs,
scripts/install.sh and scripts/build-controlplane.sh stop before pip or go writes anything, saying how much
they need and how much is free. The small filesystem is a real one: a 16 MB tmpfs mounted in a mount
namespace of the test's own (`unshare -m`), which nobody else sees and which goes with the process."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.cluster import REPO

pytestmark = pytest.mark.unit

FIGURES = {m.group(1): int(m.group(2)) for m in re.finditer(r"^SETUP_DISK_GB_(\w+)=(\d+)",
                                                             (REPO / "scripts" / "setup-disk.sh").read_text(), re.M)}
ON_SMALL_DISK = 'mount -t tmpfs -o size=16m tmpfs "$1" && shift && exec "$@"'


def on_small_disk(mountpoint: Path, *command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run command with a 16 MB tmpfs at mountpoint, in a mount namespace of its own."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -m` (CAP_SYS_ADMIN) to mount a small tmpfs")
    mountpoint.mkdir()
    return subprocess.run(["unshare", "-m", "bash", "-c", ON_SMALL_DISK, "_", str(mountpoint), *command],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_cold_control_plane_build_without_the_disk_it_needs_stops_before_building(tmp_path: Path) -> None:
    if not shutil.which("go"):
        pytest.skip("needs go (scripts/build-controlplane.sh stamps name its version)")
    small = tmp_path / "small"
    proc = on_small_disk(small, "bash", str(REPO / "scripts" / "build-controlplane.sh"),
                         env={"PATH": f"{Path(shutil.which('go') or '').parent}:/usr/bin:/bin",
                              "FT_CACHE_DIR": str(small / "cache"), "FT_SETUP_SIDE_BY_SIDE": "1",
                              "VENV": str(tmp_path / "venv")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    go = FIGURES["CONTROLPLANE"] + max(FIGURES["TOOLS"], FIGURES["KUEUE"], FIGURES["WEED"])
    assert re.search(rf"build-controlplane: needs about {go + FIGURES['VENV']} GB free under {small}/cache "
                     rf"\(control plane {FIGURES['CONTROLPLANE']} GB \+ \S+ \d+ GB \+ the virtualenv installed beside it "
                     rf"{FIGURES['VENV']} GB\), only 0\.0 GB free", proc.stderr), proc.stderr
    assert "building" not in proc.stdout, proc.stdout


def test_a_first_install_without_the_disk_it_needs_stops_before_pip(tmp_path: Path) -> None:
    small = tmp_path / "small"
    venv = small / "venv"
    proc = on_small_disk(small, "bash", str(REPO / "scripts" / "install.sh"),
                         env={"PATH": "/usr/bin:/bin", "VENV": str(venv)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"install: needs about {FIGURES['VENV']} GB free under {small} ({venv} and {venv}-mlflow), "
            "only 0.0 GB free") in proc.stderr, proc.stderr
    assert "torch" not in proc.stdout, proc.stdout

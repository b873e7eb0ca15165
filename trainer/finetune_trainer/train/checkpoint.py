"""Find the checkpoint to resume from, and keep our own state (trained tokens) inside each one.

A checkpoint counts only once our state file is in it: that file is written after the Trainer has
finished saving, so a pod killed mid-save leaves a directory we skip rather than a run we corrupt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..atomic_json import write_json_atomic

STATE_FILE = "finetune_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The global step of a `checkpoint-<step>` directory, None for anything else."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    """Saved to the end: the Trainer's state and ours are both there."""
    return (path / "trainer_state.json").is_file() and (path / STATE_FILE).is_file()


def latest_checkpoint(checkpoints: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `checkpoints`, or None."""
    root = Path(checkpoints)
    if not root.is_dir():
        return None
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None]
    for _, path in sorted(found, reverse=True):
        if is_complete(path):
            return path
    return None


def write_state(checkpoint: str | Path, state: dict[str, Any]) -> Path:
    """Write our state into a checkpoint (atomically: a rename marks it complete)."""
    target = Path(checkpoint) / STATE_FILE
    write_json_atomic(target, state, indent=None, sort_keys=True, default=None, make_parents=False)
    return target


def read_state(checkpoint: str | Path | None) -> dict[str, Any]:
    """Our state from a checkpoint; empty for a fresh run."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}

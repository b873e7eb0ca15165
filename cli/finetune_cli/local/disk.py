"""Free space in the work directory: checked before the phases that write a lot, named when it ran out.

Estimates are deliberately rough upper bounds from the model's size on disk; `FT_MIN_FREE_BYTES`
replaces them with one number for every phase (0 turns the check off).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from finetune_api.resolved import ResolvedConfig

MIN_FREE_ENV = "FT_MIN_FREE_BYTES"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
KEPT_CHECKPOINTS = 3  # save_total_limit in the trainer's arguments
MIB = 1 << 20


class DiskFull(Exception):
    """Not enough free space in `directory` for a phase."""

    def __init__(self, directory: Path, phase: str, needed: int | None, free: int) -> None:
        need = f"needs about {human(needed)}" if needed else "ran out of space"
        super().__init__(f"disk full: {directory} has {human(free)} free and {phase} {need}; "
                         "free some space and run the same command to resume")
        self.directory, self.phase, self.needed, self.free = directory, phase, needed, free


def human(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _weights_bytes(model_dir: str) -> int:
    root = Path(model_dir)
    if not root.is_dir():
        return 0  # a remote model: nothing to measure here
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def _input_bytes(config: ResolvedConfig) -> int:
    """The datasets' size: files, directories of data files, or saved datasets."""
    from finetune_trainer.fetch.cache import tree_bytes

    paths = [config.paths.train, config.paths.validation, config.paths.eval]
    return sum(tree_bytes(Path(p))[0] for p in paths if p and Path(p).exists())


def required_bytes(phase: str, config: ResolvedConfig) -> int:
    """The free space `phase` needs to start: FT_MIN_FREE_BYTES when set, else the estimate."""
    override = os.environ.get(MIN_FREE_ENV)
    if override is not None and override.strip():
        return int(override)
    return estimated_bytes(phase, config)


def estimated_bytes(phase: str, config: ResolvedConfig) -> int:
    """About what `phase` writes into the work directory."""
    model = _weights_bytes(config.paths.model)
    full = config.spec.adapter.type == "full"
    if phase == "prepare":
        return 4 * _input_bytes(config) + MIB
    if phase.startswith("train"):
        # a checkpoint holds the trained weights and two Adam moments; the final weights come on top
        trained = model if full else model // 4
        return trained * 3 * KEPT_CHECKPOINTS + trained + MIB
    if phase == "merge":
        return model + MIB
    return MIB


def check_free_space(directory: Path, phase: str, config: ResolvedConfig) -> None:
    """Raise DiskFull when `directory` has less free space than `phase` needs."""
    needed = required_bytes(phase, config)
    free = free_bytes(directory)
    if free < needed:
        raise DiskFull(directory, phase, needed, free)

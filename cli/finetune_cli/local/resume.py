"""Which phases of a local run are finished, checked rather than trusted (DESIGN.md §7, resume rules).

After a phase succeeds, `<workdir>/phases/<phase>.json` records its termination message,
the digest of the resolved config and of its inputs, and the SHA-256 of every output file. On the
next run a phase counts as finished only when its record parses, the config and inputs are the same
and every output is still there with the same digest; otherwise it runs again, and so does every
phase after it (their records are dropped when an earlier phase runs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from finetune_api.contract.artifacts import tree_digest
from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_trainer.atomic_json import write_json_atomic

PHASES = ("prepare", "baseline", "train", "merge", "evaluate")
RECORD_VERSION = 1


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(paths: Iterable[Path]) -> list[Path]:
    """The files of `paths`, directories walked; `datasets` map caches (`cache-*.arrow`, written next to
    a prepared dataset by the phases that read it) are not outputs."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("cache-"))
        else:
            out.append(path)
    return out


def phase_outputs(phase: str, config: ResolvedConfig) -> list[Path]:
    """What a finished `phase` leaves behind (files or directories)."""
    layout = ArtifactLayout(config.paths.output)
    if phase == "prepare":
        outputs = [layout.data_report, layout.data / "prepared.json"]
        try:
            outputs.append(layout.data / json.loads((layout.data / "prepared.json").read_text())["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the record's own list then names a file that is missing: not finished
        return outputs
    if phase == "baseline":
        return [layout.base_outputs]
    if phase == "train":
        return [layout.tuned_weights(config.spec.adapter.type), layout.run_json]
    if phase == "merge":
        return [layout.merged]
    if phase == "evaluate":
        return [layout.eval_report]
    raise ValueError(f"unknown phase {phase!r}")


def phase_inputs(phase: str, config: ResolvedConfig) -> dict[str, str]:
    """Digests of what a phase reads besides the config: the datasets for prepare, a file or a
    directory (of data files, or a saved dataset); the later phases read prepare's outputs, which are
    checked through prepare's record."""
    if phase != "prepare":
        return {}
    paths = [config.paths.train, config.paths.validation, config.paths.eval]
    return {p: file_digest(Path(p)) if Path(p).is_file() else tree_digest(p) for p in paths if p and Path(p).exists()}


def config_digest(config: ResolvedConfig) -> str:
    """The resolved config's digest, without the serving settings the recorded phases do not read
    (replicas, placement, extra vLLM args; prepare does read `maxModelLen`, and `mode` adds or drops
    merge) and without the output path (records are relative: a work directory may be moved or copied)."""
    dumped = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    dumped["paths"].pop("output", None)
    serving = dumped["spec"].get("serving", {})
    dumped["spec"]["serving"] = {k: serving.get(k) for k in ("enabled", "mode", "maxModelLen")}
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()


class PhaseRecords:
    """The finished-phase records of one work directory."""

    def __init__(self, workdir: Path, config: ResolvedConfig) -> None:
        self.dir = workdir / "phases"
        self.workdir = workdir
        self.config = config
        self.config_digest = config_digest(config)

    def path(self, phase: str) -> Path:
        return self.dir / f"{phase}.json"

    def _outputs(self, phase: str) -> dict[str, str]:
        return {str(p.relative_to(self.workdir)): file_digest(p) for p in _files(phase_outputs(phase, self.config))}

    def finished(self, phase: str) -> str | None:
        """The phase's termination message when it finished and its outputs are intact; None when it
        must run."""
        try:
            record = json.loads(self.path(phase).read_text())
            if (
                record.get("version") != RECORD_VERSION
                or record.get("config") != self.config_digest
                or record.get("inputs") != phase_inputs(phase, self.config)
                or not record.get("outputs")
            ):
                return None
            for name, digest in record["outputs"].items():
                if file_digest(self.workdir / name) != digest:
                    return None
            if set(record["outputs"]) != set(self._outputs(phase)):
                return None
        except (OSError, ValueError, AttributeError):
            return None
        message = record.get("message")
        return message if isinstance(message, str) else None

    def record(self, phase: str, message: str) -> None:
        """Mark `phase` finished with its termination `message` and the digests of its outputs."""
        outputs = self._outputs(phase)
        write_json_atomic(self.path(phase), {
            "version": RECORD_VERSION, "phase": phase, "config": self.config_digest,
            "inputs": phase_inputs(phase, self.config), "outputs": outputs, "message": message,
        })

    def forget_from(self, phase: str) -> None:
        """`phase` runs again: drop its record and those of every later phase."""
        for later in PHASES[PHASES.index(phase):]:
            self.path(later).unlink(missing_ok=True)

"""Artifacts a phase reports: a path under the output location and, for weights, a content digest.

The digest is `sha256:` + the SHA-256 of a manifest with one `<sha256 of file>  <relative path>` line per
file, sorted by path — the same text as `find . -type f | LC_ALL=C sort | xargs sha256sum` inside the
directory, so anyone can check a copied adapter or model without our code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from .termination import ContractModel

CHUNK_BYTES = 1 << 20


class ArtifactRef(ContractModel):
    """One output: where it is relative to the output location, and its digest when it is weights."""

    path: str
    """Relative to the output location (`adapter`, `merged`, `eval/report.json`, …)."""
    digest: str | None = None

    def under(self, root: str) -> str:
        """The artifact's location under `root` (a URI or a path)."""
        return f"{root.rstrip('/')}/{self.path}" if root else self.path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(root: str | Path) -> str:
    """`<sha256>  <relative path>` per file under `root`, sorted by path (sha256sum's format)."""
    base = Path(root)
    files = sorted((p for p in base.rglob("*") if p.is_file()), key=lambda p: p.relative_to(base).as_posix())
    return "".join(f"{file_sha256(p)}  ./{PurePosixPath(p.relative_to(base).as_posix())}\n" for p in files)


def tree_digest(root: str | Path) -> str:
    """The content digest of a directory (see the module docstring)."""
    return "sha256:" + hashlib.sha256(manifest(root).encode()).hexdigest()


def artifact_ref(output_root: str | Path, path: str | Path, with_digest: bool = False) -> ArtifactRef:
    """The reference of `path` (under `output_root`), with the directory's digest when asked."""
    relative = Path(path).resolve().relative_to(Path(output_root).resolve()).as_posix()
    return ArtifactRef(path=relative, digest=tree_digest(path) if with_digest else None)

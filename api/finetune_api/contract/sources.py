"""The fetch step's contract: which Secret keys a source reads, under which env names, and what the
fetch step reports (the resolved identities) and where the cached copy of each source lives."""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field

from ..sources import SourceRole, SourceScheme
from .termination import ContractModel, PhaseSummary

CREDENTIAL_KEYS: dict[str, tuple[tuple[str, bool], ...]] = {
    "s3": (
        ("AWS_ACCESS_KEY_ID", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SESSION_TOKEN", False),
        ("AWS_ENDPOINT_URL", False),
        ("AWS_REGION", False),
    ),
    "hf": (("HF_TOKEN", True),),
}
"""The keys of a source's Secret, by scheme: (key, required). A missing optional key is left unset."""

SOURCE_CACHE_DIR = ".source-cache"
"""The source cache's directory on the artifacts volume (next to the jobs' output directories)."""


def credential_env(role: SourceRole, key: str) -> str:
    """The env var a pod gets for `key` of the Secret of the source in `role`: `FT_MODEL_AWS_ACCESS_KEY_ID`.
    Prefixed by role so a model and a dataset may come from stores with different credentials."""
    return f"FT_{role.upper()}_{key}"


CACHED_SCHEMES: tuple[SourceScheme, ...] = ("hf", "s3")
"""Sources the fetch step copies into the cache (and holds there for the job); volumes and local paths
are read in place."""


def cache_holder(namespace: str, job: str) -> str:
    """The name of a job's hold on the cache (`holders/<holder>.json`): written by the fetch step,
    removed by the release step when the job no longer reads its sources."""
    return f"{namespace}.{job}"


def release_module_args(cache_root: str, holder: str, max_bytes: int | None) -> list[str]:
    """`-m finetune_trainer.fetch.release …`: drop `holder`'s hold, then evict down to `max_bytes`."""
    limit = ["--max-bytes", str(max_bytes)] if max_bytes is not None else []
    return ["-m", "finetune_trainer.fetch.release", "--cache", cache_root, "--holder", holder, *limit]


def cache_key(identity: str) -> str:
    """The cache directory name of a resolved identity (content-addressed: a new commit, ETag or file
    digest is a new entry; the same identity is the same bytes)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def cache_path(cache_root: str, identity: str) -> str:
    """Where the cached copy of `identity` is, under the cache root (`<root>/<key>/files`)."""
    return str(PurePosixPath(cache_root) / cache_key(identity) / "files")


class ResolvedSource(ContractModel):
    """One source as the fetch step resolved it."""

    role: SourceRole
    uri: str
    scheme: SourceScheme
    identity: str
    """Immutable: `hf:<repo>@<commit>`, `s3:<bucket>/<prefix>#sha256:<over keys and ETags>`, or
    `sha256:<over the files' digests>` for a volume or local path."""
    path: str
    """Where the phases read it: the cached copy (read-only), or the volume path itself."""
    bytes: int = 0
    files: int = 0
    downloaded_bytes: int = 0
    """Bytes fetched from the hub or store by this step (0 on a cache hit)."""


class FetchSummary(PhaseSummary):
    """The fetch step (Validating): every source's identity and where it is now."""

    phase: Literal["fetch"] = "fetch"
    sources: list[ResolvedSource] = Field(default_factory=list)

    def path_of(self, role: SourceRole) -> str | None:
        return next((s.path for s in self.sources if s.role == role), None)

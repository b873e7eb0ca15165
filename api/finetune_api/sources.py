"""Where a model or dataset comes from: the spec's URIs parsed into typed sources (no clients here).

The trainer's fetch step resolves each source to an immutable identity and downloads it once into the
content-addressed source cache (DESIGN.md §9 Sources); the operator only needs the parsing (which pods
need which Secret). Pydantic and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceScheme = Literal["hf", "s3", "pvc", "local"]
SourceRole = str
"""`model`, `train`, `validation`, `eval`, `regression`, `output`, or `suite<N>` (the dataset of
`evaluation.suites[N]`, see `suite_role`): the prefix of the role's credential env and its link under
`sources/`. A suite's role is its position, not its name: two names could map to one env name."""
REMOTE_SCHEMES: frozenset[str] = frozenset({"hf", "s3"})
HF_REPO_TYPES = ("models", "datasets", "spaces")


def suite_role(index: int) -> SourceRole:
    """The role of the dataset of `evaluation.suites[index]`."""
    return f"suite{index}"


@dataclass(frozen=True, slots=True)
class Source:
    """One parsed location: `hf://[datasets/]org/name[@revision]`, `s3://bucket/prefix`,
    `pvc://claim/path` or a local path."""

    scheme: SourceScheme
    location: str
    """hf: the repo id (`org/name`); s3: the bucket; pvc: the claim; local: the path."""
    path: str = ""
    """s3: the key prefix; pvc: the path inside the claim; hf: a file or folder inside the repo."""
    revision: str | None = None
    """hf: the branch, tag or commit (from `@revision` or `spec.model.revision`)."""
    repo_type: Literal["model", "dataset"] = "model"
    """hf: a model repo, or a dataset repo (`hf://datasets/org/name`; a dataset's bare `hf://org/name`)."""

    @property
    def remote(self) -> bool:
        """Fetched over the network (hub, object store) rather than read from a volume."""
        return self.scheme in REMOTE_SCHEMES


def parse_source(uri: str, revision: str | None = None, dataset: bool = False) -> Source:
    """Parse a spec URI (admission already checked its shape). `revision` is `spec.model.revision`;
    `dataset` makes a bare `hf://org/name` a dataset repo, as the Hub's own `hf://` paths do."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return Source("local", uri)
    rest = rest.strip("/")
    if scheme == "hf":
        repo, at, pinned = rest.partition("@")
        parts = repo.split("/")
        repo_type: Literal["model", "dataset"] = "dataset" if dataset else "model"
        if parts[0] in HF_REPO_TYPES:
            repo_type = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:]
        if not parts or not all(parts):
            raise ValueError(f"{uri}: an hf:// URI names a repo as `org/name` (optionally `@revision`)")
        return Source("hf", "/".join(parts[:2]), "/".join(parts[2:]), revision=(pinned if at else None) or revision,
                      repo_type=repo_type)
    if scheme in ("s3", "pvc"):
        location, _, path = rest.partition("/")
        return Source("s3" if scheme == "s3" else "pvc", location, path)
    raise ValueError(f"{uri}: unknown scheme {scheme}:// (hf, s3, pvc or a local path)")

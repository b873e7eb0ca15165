"""Resolving a source to its immutable identity, and downloading it: the Hub (huggingface_hub), S3
(obstore) and volumes/local paths (read in place, identified by their files' digests).

Credentials come from the role's env (`FT_<ROLE>_<KEY>`, set from the spec's Secret by the operator;
see `finetune_api.contract.sources`), else from the process's own environment (`AWS_*`, `HF_TOKEN`) for
`ftctl run`. No credential is ever printed: errors name the source, never the key.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.contract.sources import credential_env
from finetune_api.sources import Source, SourceRole

if TYPE_CHECKING:  # typed dicts of obstore's stubs, not importable at run time
    from obstore.store import ClientConfig, S3Config

COMMIT = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1 << 20


class SourceNotFound(ValueError):
    """The repo, revision, bucket, prefix or path does not exist: the user's mistake (exit 1)."""


@dataclass(frozen=True)
class Resolved:
    """A source's identity, and how to get its files: `download(dir) -> bytes read` for remote
    sources, or the `local` path itself for volumes and local paths."""

    identity: str
    download: Callable[[Path], int] | None = None
    local: Path | None = None
    name: str | None = None
    """The part of the cache entry the source names: a single S3 object's file name, or a path inside
    a hub repo (`hf://datasets/org/name/train.jsonl`)."""


def credential(role: SourceRole, key: str) -> str | None:
    """The role's own credential (from its Secret), else None (the client's default chain applies)."""
    return os.environ.get(credential_env(role, key)) or None


# ----------------------------------------------------------------------------------------- hub
def resolve_hf(source: Source, role: SourceRole) -> Resolved:
    """`hf://org/name[@revision]` → `hf:<type>/<repo>@<commit>`. A revision that is already a commit
    needs no lookup; otherwise the hub (or, with HF_HUB_OFFLINE=1, the local hub cache's refs) says
    which commit it names."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = credential(role, "HF_TOKEN")
    revision = source.revision or "main"
    where = f"hf://{source.location}@{revision}"

    def snapshot(rev: str, local_only: bool) -> Path:
        try:
            return Path(snapshot_download(source.location, repo_type=source.repo_type, revision=rev,
                                          token=token, local_files_only=local_only))
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise SourceNotFound(f"{where}: no such repo or revision ({type(exc).__name__})") from exc
        except GatedRepoError as exc:
            raise SourceNotFound(f"{where}: gated repo; give a token with access (secretRef key HF_TOKEN)") from exc
        except LocalEntryNotFoundError as exc:
            raise SourceNotFound(f"{where}: not in the local hub cache and the hub is offline (HF_HUB_OFFLINE)") from exc
        except HfHubHTTPError as exc:
            raise ConnectionError(f"{where}: hub request failed ({type(exc).__name__})") from exc

    commit = revision if COMMIT.match(revision) else _hf_commit(source, revision, token, lambda: snapshot(revision, True))

    def download(target: Path) -> int:
        path = snapshot(commit, False)
        shutil.copytree(path, target, dirs_exist_ok=True)  # follows the hub cache's blob symlinks
        return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())

    return Resolved(f"hf:{source.repo_type}/{source.location}@{commit}", download, name=source.path or None)


def _hf_commit(source: Source, revision: str, token: str | None, offline_snapshot: Callable[[], Path]) -> str:
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return offline_snapshot().name  # snapshots/<commit>: the cache's ref for the revision
    info: Any = HfApi(token=token).repo_info(source.location, repo_type=source.repo_type, revision=revision)
    return str(info.sha)


# ----------------------------------------------------------------------------------------- s3
def s3_store(source: Source, role: SourceRole) -> Any:
    """An obstore S3 store for the bucket, with the role's credentials when it has a Secret (the
    process's `AWS_*` environment fills in the rest, as obstore reads it)."""
    from obstore.store import S3Store

    config: S3Config = {}
    for key, value in (("access_key_id", credential(role, "AWS_ACCESS_KEY_ID")),
                       ("secret_access_key", credential(role, "AWS_SECRET_ACCESS_KEY")),
                       ("session_token", credential(role, "AWS_SESSION_TOKEN")),
                       ("endpoint", credential(role, "AWS_ENDPOINT_URL")),
                       ("region", credential(role, "AWS_REGION"))):
        if value:
            config[key] = value  # type: ignore[literal-required]
    endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL", "")
    client: ClientConfig | None = {"allow_http": True} if endpoint.startswith("http://") else None  # an in-cluster store
    return S3Store(source.location, config=config or None, client_options=client)


def resolve_s3(source: Source, role: SourceRole) -> Resolved:
    """`s3://bucket/prefix` → `s3:<bucket>/<prefix>#sha256:<keys, sizes and ETags>`: one object, or
    every object under the prefix."""
    import obstore

    store = s3_store(source, role)
    where = f"s3://{source.location}/{source.path}"
    try:
        single = _head(store, source.path) if source.path else None
        if single is not None:
            objects = [single]
            prefix = source.path.rsplit("/", 1)[0] if "/" in source.path else ""
        else:
            prefix = source.path.rstrip("/")
            objects = [meta for batch in obstore.list(store, prefix or None) for meta in batch]
    except FileNotFoundError as exc:
        raise SourceNotFound(f"{where}: no such bucket") from exc
    except Exception as exc:  # noqa: BLE001 - obstore raises its own classes for auth, network, server errors
        raise _s3_error(where, exc) from exc
    if not objects:
        raise SourceNotFound(f"{where}: no object under this prefix")
    digest = hashlib.sha256()
    for meta in sorted(objects, key=lambda m: m["path"]):
        digest.update(f"{meta['path']}\0{meta['size']}\0{meta.get('e_tag') or ''}\n".encode())
    strip = len(prefix) + 1 if prefix else 0

    def download(target: Path) -> int:
        total = 0
        for meta in objects:
            dest = target / meta["path"][strip:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                result = obstore.get(store, meta["path"])
                with dest.open("wb") as out:
                    for chunk in result.stream(min_chunk_size=CHUNK):
                        out.write(chunk)
                        total += len(chunk)
            except Exception as exc:  # noqa: BLE001
                raise _s3_error(f"s3://{source.location}/{meta['path']}", exc) from exc
        return total

    name = single["path"][strip:] if single is not None else None
    return Resolved(f"s3:{source.location}/{source.path}#sha256:{digest.hexdigest()}", download, name=name)


def _head(store: Any, key: str) -> Any:
    import obstore

    try:
        return obstore.head(store, key)
    except FileNotFoundError:
        return None


def _s3_error(where: str, exc: BaseException) -> Exception:
    """Denied access is the user's (wrong or missing Secret); anything else is infrastructure (retried).
    Only the exception's class is kept: a store's error text may echo a request's signed headers."""
    name = type(exc).__name__
    if name in ("PermissionDeniedError", "UnauthenticatedError"):
        return SourceNotFound(f"{where}: access denied ({name}); check the source's secretRef")
    return ConnectionError(f"{where}: object store request failed ({name})")


# ----------------------------------------------------------------------------------------- volumes
def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_local(path: Path, shown: str) -> Resolved:
    """A volume or local path is read in place; its identity is a digest over its files' digests."""
    if not path.exists():
        raise SourceNotFound(f"{shown}: no such file or directory")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{file_digest(file)}\n".encode())
    return Resolved(f"sha256:{digest.hexdigest()}", local=path)

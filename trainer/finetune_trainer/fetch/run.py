"""The fetch step's body: every source of the job resolved, downloaded once into the cache, reported."""

from __future__ import annotations

import sys
from pathlib import Path

from finetune_api.contract.sources import CACHED_SCHEMES, FetchSummary, ResolvedSource, cache_holder
from finetune_api.resolved import ResolvedConfig, job_sources
from finetune_api.sources import Source, SourceRole

from .cache import SourceCache, tree_bytes
from .stores import Resolved, resolve_hf, resolve_local, resolve_s3


def holder_name(config: ResolvedConfig) -> str:
    """The job a cache hold belongs to (released when the job is done with its sources)."""
    return cache_holder(config.namespace, config.job)


def _resolve(source: Source, role: SourceRole, path: str) -> Resolved:
    if source.scheme == "hf":
        return resolve_hf(source, role)
    if source.scheme == "s3":
        return resolve_s3(source, role)
    return resolve_local(Path(path), path)


def run_fetch(config: ResolvedConfig) -> FetchSummary:
    """Resolve each source, fill the cache for the remote ones, hold them for this job, evict the rest
    down to the size limit. Raises SourceNotFound (user) or ConnectionError/OSError (infrastructure)."""
    cache = SourceCache(Path(config.source_cache), config.source_cache_max_bytes) if config.source_cache else None
    resolved: list[ResolvedSource] = []
    for role, (source, _ref) in job_sources(config.spec).items():
        path = config.source_path(role)
        uri = config.spec.model.uri if role == "model" else _ref.uri if _ref is not None else path
        found = _resolve(source, role, path)
        downloaded = 0
        if found.local is not None:
            where = found.local
        elif cache is None:
            raise ValueError(f"{uri}: a {source.scheme}:// source needs the source cache (no cache directory configured)")
        else:
            files, downloaded = cache.fill(found.identity, found.download or (lambda _d: 0))
            where = files / found.name if found.name else files
        size, count = tree_bytes(where)
        print(f"fetch: {role} {uri} -> {found.identity} ({'downloaded ' + str(downloaded) + ' bytes' if downloaded else 'cached' if found.local is None else 'in place'})",
              file=sys.stderr)
        resolved.append(ResolvedSource(role=role, uri=uri, scheme=source.scheme, identity=found.identity,
                                       path=str(where), bytes=size, files=count, downloaded_bytes=downloaded))
    cached = [s.identity for s in resolved if s.scheme in CACHED_SCHEMES]
    if cache is not None and cached:
        cache.hold(holder_name(config), cached)
        for gone in cache.evict():
            print(f"fetch: evicted {gone} (cache over its size limit)", file=sys.stderr)
    return FetchSummary(sources=resolved, message=f"{len(resolved)} source(s) resolved")

"""The upload step: a finished run's final artifacts to its `s3://` output, with the obstore client the
fetch step uses (DESIGN.md §9 Remote output).

Every file goes to a fixed key (`<prefix>/<path under the output directory>`), so a retried upload
overwrites the same objects. run.json goes after the artifacts, carrying the keys and ETags of the
others; the local run.json is left as training wrote it (it is a training output `ftctl run` verifies on
resume). The record of every key and ETag (`upload.json`) is written next to it and to the bucket, last;
the step's summary only counts and points at it. A failure names the bucket and key, never the credential.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from finetune_api.contract.upload import (UPLOAD_RECORD, UPLOADED_PARTS, UploadedObject, UploadRecord, UploadSummary,
                                          object_key)
from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_api.sources import parse_source

from .atomic_json import write_json_atomic
from .fetch.stores import SourceNotFound, s3_store


class UploadDenied(SourceNotFound):
    """The store refused the output's credentials: the user's Secret (exit 1, not retried)."""


class UploadFailed(ConnectionError):
    """The store failed a write: infrastructure; the message names the bucket and key."""


def artifact_files(output: Path) -> list[Path]:
    """The final artifacts under `output` that exist, run.json last (see `UPLOADED_PARTS`)."""
    files: list[Path] = []
    for part in UPLOADED_PARTS:
        path = output / part
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
    return files


def _put(store: Any, bucket: str, key: str, data: Path | bytes) -> UploadedObject:
    import obstore

    try:
        result = obstore.put(store, key, data)
    except Exception as exc:  # noqa: BLE001 - obstore's own classes; only the class name is kept (no signed headers)
        name = type(exc).__name__
        if name in ("PermissionDeniedError", "UnauthenticatedError"):
            raise UploadDenied(f"s3://{bucket}/{key}: access denied ({name}); check spec.output.secretRef") from exc
        raise UploadFailed(f"s3://{bucket}/{key}: upload failed ({name})") from exc
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    return UploadedObject(key=key, etag=result.get("e_tag"), bytes=size)


def upload_outputs(config: ResolvedConfig) -> UploadSummary:
    """Upload the final artifacts of `config`'s run to `spec.output.uri` (an `s3://` URI)."""
    uri = config.spec.output.uri or ""
    source = parse_source(uri)
    if source.scheme != "s3":
        raise ValueError(f"spec.output.uri {uri!r}: only an s3:// output is uploaded")
    layout = ArtifactLayout(config.paths.output)
    files = artifact_files(layout.root)
    if layout.run_json not in files:
        raise FileNotFoundError(f"{layout.run_json}: no run record; the run has not finished training")
    store = s3_store(source, "output")
    uploaded: list[UploadedObject] = []
    for path in files[:-1]:
        uploaded.append(_put(store, source.location, object_key(source.path, path.relative_to(layout.root).as_posix()), path))
    record = json.loads(layout.run_json.read_text())
    record["output"] = {"uri": uri, "objects": [o.to_wire() for o in uploaded]}
    run_key = object_key(source.path, layout.run_json.name)
    uploaded.append(_put(store, source.location, run_key, json.dumps(record, indent=2, sort_keys=True).encode()))
    full = UploadRecord(bucket=source.location, prefix=source.path, objects=uploaded)
    write_json_atomic(layout.root / UPLOAD_RECORD, full.to_wire())
    manifest = _put(store, source.location, object_key(source.path, UPLOAD_RECORD), layout.root / UPLOAD_RECORD)
    summary = UploadSummary(bucket=source.location, prefix=source.path, count=len(uploaded),
                            bytes=sum(o.bytes for o in uploaded), manifest=manifest,
                            message=f"{len(uploaded)} object(s) uploaded to {uri}")
    print(f"upload: {summary.message}", file=sys.stderr)
    return summary

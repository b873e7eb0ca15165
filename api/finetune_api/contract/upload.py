"""The upload step's contract: which artifacts of a finished run go to an `s3://` output, under which
keys, and what the step reports — DESIGN.md §9 Remote output.

Every key with its ETag goes to the record (`UploadRecord`, `upload.json` on the volume and in the
bucket); the termination message (`UploadSummary`, at most 4 KiB) carries a summary of fixed size
that points at it, so a model of any number of shards is reported without truncation."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field

from .termination import ContractModel, PhaseSummary

UPLOADED_PARTS = ("adapter", "model", "merged", "eval", "data/report.json", "run.json")
"""The final artifacts, relative to the output directory: the tuned weights (an adapter or a full
model), the merged model when one was made, the evaluation reports, the data report and run.json.
Checkpoints, TensorBoard events, logs and the source links stay on the volume."""

UPLOAD_RECORD = "upload.json"
"""The upload's record (`UploadRecord`): on the artifacts volume next to run.json, and in the bucket
under the output prefix, written last."""


def object_key(prefix: str, relative: str) -> str:
    """The key of an artifact file: `<prefix>/<path under the output directory>`. The same file always
    has the same key, so a retried upload overwrites what an earlier attempt left."""
    return str(PurePosixPath(prefix.strip("/")) / relative) if prefix.strip("/") else relative


class UploadedObject(ContractModel):
    key: str
    etag: str | None = None
    """The store's ETag of the object as written (None when the store gave none)."""
    bytes: int = 0


class UploadRecord(ContractModel):
    """The full record of an upload: every object written, run.json last (the record itself is not in
    its own list; `UploadSummary.manifest` names it with its ETag)."""

    bucket: str = ""
    prefix: str = ""
    objects: list[UploadedObject] = Field(default_factory=list)


class UploadSummary(PhaseSummary):
    """The upload step's termination message: counts and where the full record is (a fixed size, far
    below 4 KiB whatever the number of files)."""

    phase: Literal["upload"] = "upload"
    bucket: str = ""
    prefix: str = ""
    count: int = 0
    """Objects written, the record not counted."""
    bytes: int = 0
    """Their total size."""
    manifest: UploadedObject | None = None
    """The record (`upload.json`) in the bucket: its key and ETag."""

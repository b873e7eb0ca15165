"""The upload step's contract: which artifacts of a finished run go to an `s3://` output, under which
keys, and what the step reports (every key with its ETag) — DESIGN.md §9 Remote output."""

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
"""The upload's record on the artifacts volume, next to run.json (every key with its ETag)."""


def object_key(prefix: str, relative: str) -> str:
    """The key of an artifact file: `<prefix>/<path under the output directory>`. The same file always
    has the same key, so a retried upload overwrites what an earlier attempt left."""
    return str(PurePosixPath(prefix.strip("/")) / relative) if prefix.strip("/") else relative


class UploadedObject(ContractModel):
    key: str
    etag: str | None = None
    """The store's ETag of the object as written (None when the store gave none)."""
    bytes: int = 0


class UploadSummary(PhaseSummary):
    """The upload step: where the final artifacts went."""

    phase: Literal["upload"] = "upload"
    bucket: str = ""
    prefix: str = ""
    objects: list[UploadedObject] = Field(default_factory=list)

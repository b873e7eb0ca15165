"""The prepared dataset: tokenized (SFT) or normalised (DPO, GRPO, eval) rows under a content address.

Layout under `ArtifactLayout(root).data`:

    data/<sha256 of inputs + tokenizer + settings>/<split>/   `datasets.Dataset.save_to_disk` (Arrow,
                                                               memory-mapped by `load_from_disk`)
    data/<sha256>/info.json                                   what is in it (splits, columns, counts)
    data/prepared.json                                        the current one (same as info.json)
    data/report.json, data/report.md                          the data report

The directory appears whole or not at all: it is written under a temporary name and renamed. The same
inputs and settings give the same address, so a retried prepare reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from finetune_api.job import FineTuneJobSpec
from finetune_api.resolved import ArtifactLayout

from ..atomic_json import write_json_atomic

FORMAT_VERSION = "prepared-v1"
POINTER = "prepared.json"
INFO = "info.json"


def content_hash(inputs: dict[str, str], tokenizer: str, settings: dict[str, Any]) -> str:
    """The prepared dataset's address: input file hashes per split, tokenizer fingerprint, settings."""
    payload = json.dumps(
        {"version": FORMAT_VERSION, "inputs": inputs, "tokenizer": tokenizer, "settings": settings},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def write_prepared(layout: ArtifactLayout, digest: str, splits: dict[str, Any], info: dict[str, Any]) -> Path:
    """Save the splits (datasets.Dataset each) under `data/<digest>/` atomically and point at them."""
    final = layout.data / digest
    info = {**info, "hash": digest, "dir": digest, "format_version": FORMAT_VERSION}
    if not (final / INFO).exists():
        layout.data.mkdir(parents=True, exist_ok=True)
        tmp = layout.data / f".tmp-{digest[:12]}-{uuid.uuid4().hex[:8]}"
        try:
            for name, dataset in splits.items():
                dataset.save_to_disk(str(tmp / name))
            (tmp / INFO).write_text(json.dumps(info, indent=2, default=str))
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / INFO).exists():  # not a concurrent writer of the same content
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_json_atomic(layout.data / POINTER, info)
    return final


def clear_pointer(layout: ArtifactLayout) -> None:
    """Forget the current prepared dataset (a failed prepare must not leave train an older one)."""
    (layout.data / POINTER).unlink(missing_ok=True)


def prepared_info(layout: ArtifactLayout) -> dict[str, Any]:
    """What `prepare` wrote: hash, dir, method, settings and per split its rows and columns."""
    pointer = layout.data / POINTER
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: no prepared dataset; run the prepare phase first")
    return json.loads(pointer.read_text())


def prepared_spec(spec: FineTuneJobSpec, info: dict[str, Any]) -> FineTuneJobSpec:
    """`spec` with `datasets.maxLength` as prepare tokenized with it (an unset one may have been
    lowered to the base model's positions), so training truncates exactly as prepare did."""
    datasets = spec.datasets.model_copy(update={"max_length": info["settings"]["max_length"]})
    return spec.model_copy(update={"datasets": datasets})


def load_prepared(layout: ArtifactLayout, split: str) -> Any:
    """The prepared split as a memory-mapped `datasets.Dataset` (no tokenizing again)."""
    import datasets

    info = prepared_info(layout)
    if split not in info["splits"]:
        raise KeyError(f"no {split!r} split in the prepared dataset (it has {', '.join(info['splits'])})")
    return datasets.load_from_disk(str(layout.data / info["dir"] / split))

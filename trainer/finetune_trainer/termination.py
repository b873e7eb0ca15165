"""Writing the termination message (its shape and ≤ 4 KiB encoding: `finetune_api.contract.termination`).

In a pod Kubernetes reads `/dev/termination-log`; `ftctl run` points `$FT_TERMINATION_LOG` at a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from finetune_api.contract.termination import PhaseSummary

DEFAULT_PATH = "/dev/termination-log"
ENV_PATH = "FT_TERMINATION_LOG"


def termination_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Where to write: the argument, `$FT_TERMINATION_LOG`, or `/dev/termination-log` when writable."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    default = Path(DEFAULT_PATH)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_termination_message(summary: PhaseSummary, path: str | os.PathLike[str] | None = None) -> str:
    """Write the summary where Kubernetes reads it (no-op outside a pod); returns the JSON written."""
    text = summary.encode()
    target = termination_path(path)
    if target is not None:
        target.write_text(text, encoding="utf-8")
    return text

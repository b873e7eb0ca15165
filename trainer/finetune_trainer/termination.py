"""The container's termination message: a ≤ 4 KiB JSON summary the operator reads from the pod status.

Kubernetes keeps at most 4096 bytes of `/dev/termination-log`; anything longer is cut mid-JSON. So we
shrink the summary (long strings, then long lists) until it fits, and always write valid JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_BYTES = 4096
DEFAULT_PATH = "/dev/termination-log"
ENV_PATH = "FT_TERMINATION_LOG"


def _shrink(value: Any, max_str: int, max_list: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= max_str else value[: max(max_str - 1, 0)] + "…"
    if isinstance(value, list):
        items = [_shrink(v, max_str, max_list) for v in value[:max_list]]
        if len(value) > max_list:
            items.append(f"… {len(value) - max_list} more")
        return items
    if isinstance(value, dict):
        return {str(k): _shrink(v, max_str, max_list) for k, v in value.items()}
    return value


def encode_summary(summary: dict[str, Any], max_bytes: int = MAX_BYTES) -> str:
    """`summary` as compact JSON of at most `max_bytes` UTF-8 bytes, shortened where needed."""
    text = json.dumps(summary, separators=(",", ":"), ensure_ascii=False, default=str)
    max_str, max_list = 2048, 64
    while len(text.encode()) > max_bytes:
        if max_str <= 16 and max_list <= 1:
            keys = {k: summary[k] for k in ("ok", "phase") if k in summary}
            return json.dumps({**keys, "truncated": True}, separators=(",", ":"), default=str)
        max_str, max_list = max(max_str // 2, 16), max(max_list // 2, 1)
        text = json.dumps(_shrink(summary, max_str, max_list), separators=(",", ":"), ensure_ascii=False, default=str)
    return text


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


def write_termination_message(summary: dict[str, Any], path: str | os.PathLike[str] | None = None) -> str:
    """Write the summary where Kubernetes reads it (no-op outside a pod); returns the JSON written."""
    text = encode_summary(summary)
    target = termination_path(path)
    if target is not None:
        target.write_text(text, encoding="utf-8")
    return text

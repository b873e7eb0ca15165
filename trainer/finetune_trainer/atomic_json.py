"""`write_json_atomic`: write a JSON file so that readers see the old file or the new one, never half.

Kept free of heavy imports: the data, train and evaluation code all write their JSON through it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Callable


def write_json_atomic(
    path: Path,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = str,
    make_parents: bool = True,
) -> None:
    """Write `data` as JSON to `path` through a temporary file in the same directory and a rename.

    `indent`, `sort_keys` and `default` go to `json.dumps`; `make_parents` creates the directory first.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, sort_keys=sort_keys, default=default))
    os.replace(tmp, path)

"""Container paths on the host. Programs cannot see the mount mapping, so mount paths are substituted
textually in command, args, env values and volume files (host names resolve through DNS: network.py)."""

from __future__ import annotations

import re
from pathlib import Path


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined vars are replaced, $$ is an escaped $."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


class PathMap:
    """Textual mapping of container paths (mount paths) to host paths, in one regex pass."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = {k.rstrip("/") or "/": v for k, v in mapping.items() if k and k != "/"}
        keys = sorted(self.mapping, key=len, reverse=True)
        self._re = (
            re.compile(r"(?<![\w.\-/])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.\-])")
            if keys else None
        )

    def __call__(self, s: str) -> str:
        if self._re is not None:
            s = self._re.sub(lambda m: self.mapping[m.group(1)], s)
        return s

    def host_path(self, container_path: str) -> str | None:
        """Host path for an absolute container path if it lies under a mapped path."""
        p = container_path.rstrip("/") or "/"
        for k in sorted(self.mapping, key=len, reverse=True):
            if p == k or p.startswith(k + "/"):
                return self.mapping[k] + p[len(k):]
        return None


def safe_join(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if not str(p).startswith(str(root.resolve())):
        raise ValueError(f"path {rel!r} escapes the volume")
    return p

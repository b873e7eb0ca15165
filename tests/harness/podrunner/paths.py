"""Container paths on the host. Programs cannot see the mount mapping, so mount paths (and the pod's
subdomain host names) are substituted textually in command, args, env values and volume files."""

from __future__ import annotations

import re
from pathlib import Path

from .node import POD_IP

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined vars are replaced, $$ is an escaped $."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


class PathMap:
    """Textual mapping of container paths (mount paths) to host paths, in one regex pass."""

    def __init__(self, mapping: dict[str, str], subdomain_hosts: re.Pattern | None = None) -> None:
        self.mapping = {k.rstrip("/") or "/": v for k, v in mapping.items() if k and k != "/"}
        keys = sorted(self.mapping, key=len, reverse=True)
        self._re = (
            re.compile(r"(?<![\w.\-/])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.\-])")
            if keys else None
        )
        self._hosts = subdomain_hosts

    def __call__(self, s: str) -> str:
        if self._re is not None:
            s = self._re.sub(lambda m: self.mapping[m.group(1)], s)
        if self._hosts is not None:
            s = self._hosts.sub(POD_IP, s)
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


def subdomain_hosts(pod_spec: dict, namespace: str) -> re.Pattern | None:
    """Host names of the pod's own subdomain (`<host>.<subdomain>[.<ns>[.svc[.cluster.local]]]`), which
    map to this machine: Indexed Job peers find each other on loopback."""
    sub = pod_spec.get("subdomain")
    if not sub:
        return None
    ns = re.escape(namespace)
    return re.compile(
        r"(?<![\w.\-])[a-z0-9]([a-z0-9-]*[a-z0-9])?\." + re.escape(sub)
        + r"(\." + ns + r"(\.svc(\.cluster\.local)?)?)?(?![\w\-]|\.[a-z])"
    )

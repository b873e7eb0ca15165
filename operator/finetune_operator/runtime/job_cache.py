"""The latest FineTuneJob objects this process has seen, from watch events and from its own status writes.

Our own write returns a newer object than the watch may have delivered yet; reconciling from the older
one would repeat the transition. So the newest resourceVersion wins (a new uid replaces: same name,
new object)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Key = tuple[str, str]
"""(namespace, name)"""


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class JobCache:
    """FineTuneJob objects by (namespace, name)."""

    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}

    def seen(self, body: Mapping[str, Any]) -> None:
        """A watch event's object: kept unless the cache holds a newer version of the same object."""
        key = key_of(body)
        known = self._bodies.get(key)
        uid = (body.get("metadata") or {}).get("uid")
        if known is None or resource_version(body) >= resource_version(known) or uid != (known.get("metadata") or {}).get("uid"):
            self._bodies[key] = dict(body)

    def stored(self, key: Key, body: Mapping[str, Any]) -> None:
        """The object as our own write left it: kept when it is not older than the cached one."""
        known = self._bodies.get(key)
        if known is not None and resource_version(body) >= resource_version(known):
            self._bodies[key] = dict(body)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._bodies.get(key)

    def forget(self, key: Key) -> None:
        self._bodies.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._bodies

    def __len__(self) -> int:
        return len(self._bodies)

    def items(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        return iter(list(self._bodies.items()))

    def bodies(self) -> list[dict[str, Any]]:
        return list(self._bodies.values())

    def phases(self) -> list[str]:
        """Every cached job's phase (the jobs-by-phase gauge)."""
        return [(b.get("status") or {}).get("phase") or "Pending" for b in self.bodies()]

"""The adapter pool's replicas (DESIGN.md §5.2): desired adapters and what each replica lists in, actions out.

Pure and level-triggered, like `decide`: the runtime (`runtime.pools`) reads every replica's `/v1/models`
and carries the actions out in order. Each adapter is served under `<job>@<generation>` and the alias
`<job>`. A replica is admitted to traffic (its readiness gate set) only once it lists every adapter, and
loses the gate when its container restarts (a new vLLM process holds no run-time adapters).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .observed import parse_time

ADAPTERS_GATE = "finetune.dev/adapters-loaded"
"""The pool pods' readiness gate: True once this container holds every adapter of the pool."""


@dataclass(frozen=True)
class PoolAdapter:
    """One adapter the pool must serve: a job whose gates passed, at its current generation."""

    job: str
    generation: int
    path: str
    """Adapter directory as the pool's containers see it."""

    @property
    def versioned(self) -> str:
        """`<job>@<generation>`: a retrained adapter gets a new name, so no replica answers from a stale
        cache entry and clients can pin a version."""
        return f"{self.job}@{self.generation}"

    @property
    def names(self) -> tuple[str, str]:
        return self.versioned, self.job


@dataclass(frozen=True)
class Replica:
    """One pool pod as observed: its address, its container's start, its gate, and the adapters it lists."""

    pod: str
    url: str | None
    """`http://<podIP>:<port>`, None before the pod has an IP."""
    container_ready: bool
    started_at: dt.datetime | None
    """When the current vLLM container started (a restart clears its run-time adapters)."""
    gate: bool
    gate_since: dt.datetime | None
    """When the gate last changed: a gate set before `started_at` belongs to the previous container."""
    loaded: frozenset[str] | None = None
    """Adapter names in `/v1/models`; None when not read (container not ready, or the read failed)."""

    @property
    def gate_current(self) -> bool:
        """The gate is True and was set for this container (not carried over a restart)."""
        if not self.gate:
            return False
        return self.started_at is None or (self.gate_since is not None and self.gate_since >= self.started_at)


def replica_of(pod: dict[str, Any], container: str, port: int) -> Replica | None:
    """A pool pod as a `Replica` (adapters not read yet); None for a pod that is being deleted."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return None
    vllm: dict[str, Any] = next((c for c in status.get("containerStatuses") or [] if c.get("name") == container), {})
    running = (vllm.get("state") or {}).get("running") or {}
    gate: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == ADAPTERS_GATE), {})
    ip = status.get("podIP")
    host = f"[{ip}]" if ip and ":" in ip else ip
    return Replica(
        pod=meta.get("name") or "",
        url=f"http://{host}:{port}" if host else None,
        container_ready=bool(vllm.get("ready")) and bool(running),
        started_at=parse_time(running.get("startedAt")),
        gate=gate.get("status") == "True",
        gate_since=parse_time(gate.get("lastTransitionTime")),
    )


@dataclass(frozen=True)
class LoadAdapter:
    pod: str
    url: str
    name: str
    path: str


@dataclass(frozen=True)
class UnloadAdapter:
    pod: str
    url: str
    name: str


@dataclass(frozen=True)
class SetGate:
    """Set the pod's `ADAPTERS_GATE` condition (pods/status)."""

    pod: str
    ready: bool
    message: str


PoolAction = LoadAdapter | UnloadAdapter | SetGate


def wanted_names(adapters: list[PoolAdapter]) -> dict[str, str]:
    """Served name → adapter path, for every name the pool's replicas must list."""
    return {name: a.path for a in adapters for name in a.names}


def plan_replica(adapters: list[PoolAdapter], replica: Replica) -> list[PoolAction]:
    """What brings one replica to the desired adapters: unload what is no longer wanted (a deleted job,
    an older generation, an alias whose versioned name is missing and so may point at an older
    generation), load what is missing (versioned name first, then the alias), then the gate."""
    if not replica.container_ready or replica.url is None or replica.loaded is None:
        if replica.gate and not replica.container_ready:
            return [SetGate(replica.pod, False, "vLLM container not ready: adapters are loaded once it is")]
        return []
    wanted = wanted_names(adapters)
    loaded = set(replica.loaded)
    stale_aliases = {a.job for a in adapters if a.job in loaded and a.versioned not in loaded}
    actions: list[PoolAction] = [UnloadAdapter(replica.pod, replica.url, name)
                                 for name in sorted((loaded - set(wanted)) | stale_aliases)]
    loaded -= {a.name for a in actions if isinstance(a, UnloadAdapter)}
    for adapter in sorted(adapters, key=lambda a: a.job):
        actions += [LoadAdapter(replica.pod, replica.url, name, adapter.path)
                    for name in adapter.names if name not in loaded]
    if not replica.gate_current:
        actions.append(SetGate(replica.pod, True, f"{len(adapters)} adapter(s) loaded"))
    return actions


def plan_pool(adapters: list[PoolAdapter], replicas: list[Replica]) -> list[PoolAction]:
    """Every replica's actions, replica by replica (one replica's failure leaves the others done)."""
    return [action for replica in sorted(replicas, key=lambda r: r.pod) for action in plan_replica(adapters, replica)]


def serving_everywhere(adapter: PoolAdapter, replicas: list[Replica]) -> tuple[bool, str]:
    """Whether every ready replica (gate current: it receives traffic) lists both names of `adapter`;
    with the reason when not. No ready replica means not serving."""
    ready = [r for r in replicas if r.container_ready and r.gate_current]
    if not ready:
        return False, "no pool replica is ready"
    missing = [r.pod for r in ready if r.loaded is None or not set(adapter.names) <= r.loaded]
    if missing:
        return False, f"{adapter.versioned} not yet listed by {', '.join(sorted(missing))}"
    return True, f"{adapter.versioned} listed by {len(ready)} ready replica(s)"

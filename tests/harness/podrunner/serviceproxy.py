"""What kube-proxy gives a node, in userspace (as kube-proxy's original `userspace` mode did, before
iptables and IPVS): a Service's ClusterIP answers on this node and each TCP connection to one of its ports
is forwarded to a ready endpoint, round-robin. This machine has neither iptables nor nftables, so the
runner does it itself: it watches Services and EndpointSlices, puts each routed ClusterIP on the node's pod
bridge as a /32 (a local address of the host, so the host's processes and the pods, whose default route
is the bridge, both reach it) and listens on its ports with asyncio.

Only what stays on this machine: a Service is routed while it has a ready endpoint inside the runner's pod
network (the bridge's subnet), and connections go to those addresses only; the addresses it adds are the
ClusterIPs of such Services, on the bridge the runner created (deleting the bridge removes them too). The
Service CIDR (the API server's ServiceCIDR objects) gets an `unreachable` route, so a ClusterIP that is not
routed (yet) fails at once instead of leaving the machine by the default route. Service deletion, its last
ready endpoint going away and the runner's exit take addresses and listeners down. Services without a
selector (`default/kubernetes`) are left alone: pods reach the API server at KUBERNETES_SERVICE_HOST.

Not provided: UDP and SCTP ports, session affinity, NodePorts, load balancers, topology hints, traffic
policies; the source address a backend sees is the proxy's (the bridge address), as in userspace mode."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .cni import PodNetworkError, guard_route_metric, ip

log = logging.getLogger("podrunner")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CONNECT_TIMEOUT = 5.0
CHUNK = 65536
Key = tuple[str, str]


@dataclass(frozen=True)
class Route:
    """One Service port on its ClusterIP and the ready endpoints (address, target port) behind it."""

    service: str
    cluster_ip: str
    port: int
    backends: tuple[tuple[str, int], ...]


def routes(services: Iterable[dict[str, Any]], slices: Iterable[dict[str, Any]],
           pod_network: ipaddress.IPv4Network) -> dict[tuple[str, int], Route]:
    """Every (ClusterIP, port) to listen on: TCP ports of selector Services with a ClusterIP and at least
    one ready endpoint inside `pod_network` (the slice port of the same name gives the target port)."""
    by_service: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for es in slices:
        md = es.get("metadata") or {}
        owner = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner and es.get("addressType") == "IPv4":
            by_service[(md.get("namespace", ""), owner)].append(es)
    found: dict[tuple[str, int], Route] = {}
    for svc in services:
        md, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None" or not spec.get("selector"):
            continue
        key = (md.get("namespace", ""), md.get("name", ""))
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            backends: list[tuple[str, int]] = []
            for es in by_service[key]:
                target = next((p.get("port") for p in es.get("ports") or []
                               if (p.get("name") or "") == (port.get("name") or "")), None)
                if target is None:
                    continue
                for ep in es.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready") is False:
                        continue
                    backends += [(a, target) for a in ep.get("addresses") or []
                                 if ipaddress.ip_address(a) in pod_network]
            if backends:
                found[(cluster_ip, port["port"])] = Route(f"{key[0]}/{key[1]}", cluster_ip, port["port"],
                                                          tuple(sorted(set(backends))))
    return found


@dataclass
class _Listener:
    route: Route
    server: asyncio.Server
    turn: int = 0

    def backends_in_turn(self) -> list[tuple[str, int]]:
        """The backends, starting at the next one (round-robin; the others are tried when one refuses)."""
        backends = list(self.route.backends)
        start = self.turn % len(backends)
        self.turn += 1
        return backends[start:] + backends[:start]


@dataclass
class ServiceProxy:
    """The node's Service proxy; `start` once the bridge is up, `stop` before it is deleted."""

    api_client: Any
    bridge: str
    pod_network: ipaddress.IPv4Network
    stopping: threading.Event
    services: dict[Key, dict[str, Any]] = field(default_factory=dict)
    slices: dict[Key, dict[str, Any]] = field(default_factory=dict)
    listeners: dict[tuple[str, int], _Listener] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    guard: str | None = None

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.wanted: dict[tuple[str, int], Route] = {}
        self.changed = asyncio.Event()

    # -- the watches (threads) feed `wanted`; the loop applies it
    def start(self) -> None:
        from kubernetes import client

        self._guard_service_cidrs(client.NetworkingV1Api(self.api_client))
        threading.Thread(target=self.loop.run_forever, name="service-proxy", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._apply_loop(), self.loop)
        core, discovery = client.CoreV1Api(self.api_client), client.DiscoveryV1Api(self.api_client)
        for name, lister, store in (("services", core.list_service_for_all_namespaces, self.services),
                                    ("endpointslices", discovery.list_endpoint_slice_for_all_namespaces, self.slices)):
            threading.Thread(target=self._mirror, args=(lister, store), name=f"watch-{name}", daemon=True).start()
        log.info("service proxy: ClusterIPs of Services with ready endpoints in %s are routed on %s (userspace)",
                 self.pod_network, self.bridge)

    def stop(self) -> None:
        """Close every listener, remove the addresses and the guard route (also when the loop never ran)."""
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._apply({}), self.loop).result(15)
            self.loop.call_soon_threadsafe(self.loop.stop)
        for address in list(self.addresses):
            ip("addr", "del", f"{address}/32", "dev", self.bridge, check=False)
        if self.guard:
            ip("route", "del", "unreachable", self.guard, "metric", guard_route_metric(self.bridge), check=False)

    def _guard_service_cidrs(self, networking: Any) -> None:
        try:
            cidrs = [c for item in networking.list_service_cidr().items for c in item.spec.cidrs or []]
        except Exception as e:  # noqa: BLE001 - an API server without ServiceCIDRs: no guard, said so
            log.warning("service proxy: no ServiceCIDR readable (%s): an unrouted ClusterIP is not refused locally", e)
            return
        for cidr in [c for c in cidrs if ipaddress.ip_network(c).version == 4][:1]:
            try:
                ip("route", "add", "unreachable", cidr, "metric", guard_route_metric(self.bridge))
                self.guard = cidr
            except PodNetworkError as e:
                log.warning("service proxy: cannot guard the Service CIDR %s: %s", cidr, e)

    def _mirror(self, lister: Callable[..., Any], store: dict[Key, dict[str, Any]]) -> None:
        """List, then watch, one kind into `store`; every change recomputes the wanted routes."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    data = json.loads(lister(_preload_content=False).data)
                    rv = data["metadata"]["resourceVersion"]
                    with self.lock:
                        store.clear()
                        store.update({(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in data["items"]})
                    self._changed()
                for ev in watch.Watch().stream(lister, resource_version=rv, timeout_seconds=30,
                                               allow_watch_bookmarks=True):
                    obj = ev["raw_object"]
                    if ev["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                    with self.lock:
                        if ev["type"] == "DELETED":
                            store.pop(key, None)
                        else:
                            store[key] = obj
                    self._changed()
                    if self.stopping.is_set():
                        return
            except ApiException as e:
                rv = None
                if e.status != 410:
                    log.warning("service proxy: watch error: %s", e)
                    time.sleep(1)
            except Exception as e:  # noqa: BLE001 - the watch restarts from a fresh list
                if not self.stopping.is_set():
                    log.warning("service proxy: watch error: %s: %s", type(e).__name__, e)
                    rv = None
                    time.sleep(1)

    def _changed(self) -> None:
        with self.lock:
            wanted = routes(list(self.services.values()), list(self.slices.values()), self.pod_network)
            self.loop.call_soon_threadsafe(self._want, wanted)

    def _want(self, wanted: dict[tuple[str, int], Route]) -> None:
        if self.stopping.is_set():
            return  # `stop` takes everything down; a late watch event must not bring a listener back
        self.wanted = wanted
        self.changed.set()

    async def _apply_loop(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            try:
                await self._apply(self.wanted)
            except Exception as e:  # noqa: BLE001 - the next change retries
                log.warning("service proxy: %s: %s", type(e).__name__, e)

    # -- the loop: listeners and addresses
    async def _apply(self, wanted: dict[tuple[str, int], Route]) -> None:
        for key in [k for k in self.listeners if k not in wanted]:
            listener = self.listeners.pop(key)
            listener.server.close()
            log.info("service proxy: %s %s:%d no longer routed", listener.route.service, *key)
        for address in [a for a in self.addresses if all(a != k[0] for k in wanted)]:
            ip("addr", "del", f"{address}/32", "dev", self.bridge, check=False)
            self.addresses.discard(address)
        for key, route in wanted.items():
            current = self.listeners.get(key)
            if current is not None:
                if current.route != route:
                    log.info("service proxy: %s %s:%d -> %s", route.service, *key, _targets(route))
                current.route = route
                continue
            if route.cluster_ip not in self.addresses:
                added = ip("addr", "add", f"{route.cluster_ip}/32", "dev", self.bridge, check=False)
                if added.returncode != 0 and "File exists" not in added.stderr:
                    log.warning("service proxy: cannot add %s: %s", route.cluster_ip, added.stderr.strip())
                    continue
                self.addresses.add(route.cluster_ip)
            try:
                server = await asyncio.start_server(lambda r, w, k=key: self._forward(self.listeners.get(k), r, w),
                                                    route.cluster_ip, route.port)
            except OSError as e:
                log.warning("service proxy: cannot listen on %s:%d for %s: %s", *key, route.service, e)
                continue
            self.listeners[key] = _Listener(route, server)  # before any accepted connection's handler runs
            log.info("service proxy: %s %s:%d -> %s", route.service, *key, _targets(route))

    async def _forward(self, listener: _Listener | None, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        if listener is None:  # the Service stopped being routed while this connection was accepted
            writer.close()
            return
        route, client = listener.route, writer.get_extra_info("peername")
        for host, port in listener.backends_in_turn():
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (TimeoutError, OSError) as e:
                log.warning("service proxy: %s %s:%d: endpoint %s:%d refused: %s", route.service, route.cluster_ip,
                            route.port, host, port, e)
                continue
            log.info("service proxy: %s %s:%d: connection from %s:%d forwarded to %s:%d", route.service,
                     route.cluster_ip, route.port, *client[:2], host, port)
            await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
            up_writer.close()
            break
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close it (the other direction may still be talking); a
    broken connection closes both sides."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
        other.close()


def _targets(route: Route) -> str:
    return ", ".join(f"{h}:{p}" for h, p in route.backends)

"""Pod addresses, as a simple bridge CNI gives them: a Linux bridge on the host that owns one /24 of a private
pool (its first address is the node's address on the pod network), and per pod a network namespace joined to
the bridge by a veth pair, with an address from the runner's allocator and a default route via the bridge.

Pods then have an IP of their own (`status.podIP`, EndpointSlices), their own ports (two pods can both
listen on 29500 or 8000) and reach each other over the bridge; the host reaches every pod at its IP through
the bridge's route, and pods reach the host's services at the bridge address (`PodBridge.gateway`) only:
nothing is forwarded or NATed (ip_forward stays as it is, no iptables), so pods reach nothing beyond this
machine. All of it is done with iproute2 (`ip`, exec lists), which needs CAP_NET_ADMIN: `PodBridge.create`
returns the reason when it cannot, and the runner then keeps pods in the node's network namespace.

Every runner claims its own /24 (`ftpn<slot>` is the bridge, the claim is its atomic creation), so test
sessions running side by side on one machine never share a subnet; a slot whose subnet overlaps an address or
route already on the host is skipped. The pool is `FT_POD_NETWORK_POOL` (default 10.213.0.0/16)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("podrunner")

DEFAULT_POOL = "10.213.0.0/16"
POOL_ENV = "FT_POD_NETWORK_POOL"
BRIDGE_PREFIX = "ftpn"
NETNS_DIR = Path("/run/netns")
POD_PREFIX_LENGTH = 24


class PodNetworkError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One iproute2 command (an exec list)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise PodNetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 subnet the host already has an address or a route in (a pod subnet must overlap none)."""
    found: list[ipaddress.IPv4Network] = []
    for entry in json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = entry.get("dst", "default")
        if dst != "default" and ":" not in dst:
            found.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    for link in json.loads(ip("-j", "-4", "addr").stdout or "[]"):
        for a in link.get("addr_info") or []:
            found.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return found


@dataclass(frozen=True)
class PodBridge:
    """The node's bridge: `gateway` (the host's address on it, where pods reach host services) in `network`."""

    name: str
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @classmethod
    def create(cls, pool: str | None = None) -> PodBridge | str:
        """Claim a free /24 of the pool and bring its bridge up; the reason as a string if this machine cannot."""
        if shutil.which("ip") is None:
            return "iproute2 (`ip`) is not installed"
        pool = pool or os.environ.get(POOL_ENV) or DEFAULT_POOL
        subnets = list(ipaddress.ip_network(pool).subnets(new_prefix=POD_PREFIX_LENGTH))
        taken = _host_networks()
        start = os.getpid() % len(subnets)
        for i in range(len(subnets)):
            slot = (start + i) % len(subnets)
            net = subnets[slot]
            if any(net.overlaps(t) for t in taken):
                continue
            name = f"{BRIDGE_PREFIX}{slot}"
            made = ip("link", "add", name, "type", "bridge", check=False)
            if made.returncode != 0:
                if "File exists" in made.stderr:
                    continue  # another runner's slot
                return f"cannot create a bridge: {made.stderr.strip()}"
            bridge = cls(name, net, net.network_address + 1)
            try:
                ip("addr", "add", f"{bridge.gateway}/{net.prefixlen}", "dev", name)
                ip("link", "set", name, "up")
            except PodNetworkError as e:
                bridge.delete()
                return str(e)
            return bridge
        return f"no /{POD_PREFIX_LENGTH} of the pod network pool {pool} is free of the host's addresses and other runners"

    def delete(self) -> None:
        """Remove the bridge (with the ClusterIPs on it) and any pod namespace of its subnet or guard route of
        its Service proxy left behind (a runner that was killed)."""
        for ns in NETNS_DIR.glob(f"{self.name}-*") if NETNS_DIR.is_dir() else []:
            ip("netns", "delete", ns.name, check=False)
        ip("link", "delete", self.name, check=False)
        metric = guard_route_metric(self.name)
        for route in json.loads(ip("-j", "-4", "route", "show", "type", "unreachable", check=False).stdout or "[]"):
            if str(route.get("metric")) == metric:
                ip("route", "del", "unreachable", route["dst"], "metric", metric, check=False)

    def cli_args(self) -> list[str]:
        return ["--pod-bridge", self.name, "--pod-cidr", str(self.network)]


def guard_route_metric(bridge: str) -> str:
    """The metric of the `unreachable` route the Service proxy of `bridge`'s runner puts on the Service
    CIDR: one per bridge, so runners side by side each add and remove their own."""
    return str(1000 + int("".join(ch for ch in bridge if ch.isdigit()) or 0))


class AddressAllocator:
    """Host addresses of the bridge's subnet, handed out round-robin (a freed address is reused last)."""

    def __init__(self, network: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> None:
        self._free = [h for h in network.hosts() if h != gateway]
        self._lock = threading.Lock()

    def allocate(self) -> ipaddress.IPv4Address:
        with self._lock:
            if not self._free:
                raise PodNetworkError("the pod subnet has no free address left")
            return self._free.pop(0)

    def release(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._free.append(address)


@dataclass(frozen=True)
class PodSandboxNetwork:
    """One pod's network namespace (`netns`, a path containers enter) with its address on the bridge."""

    ip: str
    netns: Path
    name: str


class BridgeCNI:
    """ADD and DEL of a pod on the node's bridge (what a bridge CNI plugin does for the kubelet)."""

    def __init__(self, bridge_name: str, cidr: str) -> None:
        network = ipaddress.ip_network(cidr)
        assert isinstance(network, ipaddress.IPv4Network)
        self.bridge = bridge_name
        self.network = network
        self.gateway = network.network_address + 1
        self.addresses = AddressAllocator(network, self.gateway)

    def add(self) -> PodSandboxNetwork:
        """A new namespace with lo up and eth0 (one end of a veth whose other end is on the bridge)."""
        address = self.addresses.allocate()
        host_octet = int(address) - int(self.network.network_address)
        name = f"{self.bridge}-{host_octet}"
        host_veth = f"{self.bridge}v{host_octet}"
        try:
            ip("netns", "add", name)
            ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", host_veth, "master", self.bridge, "up")
            ip("-n", name, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "route", "add", "default", "via", str(self.gateway))
        except PodNetworkError:
            self._remove(name, host_veth)
            self.addresses.release(address)
            raise
        return PodSandboxNetwork(str(address), NETNS_DIR / name, name)

    def delete(self, sandbox: PodSandboxNetwork) -> None:
        """Remove the namespace (its veth pair goes with it) and free the address."""
        host_octet = int(ipaddress.ip_address(sandbox.ip)) - int(self.network.network_address)
        self._remove(sandbox.name, f"{self.bridge}v{host_octet}")
        self.addresses.release(ipaddress.IPv4Address(sandbox.ip))

    def delete_bridge(self) -> None:
        """Remove the node's bridge (once every pod's namespace is gone)."""
        PodBridge(self.bridge, self.network, self.gateway).delete()

    @staticmethod
    def _remove(netns: str, host_veth: str) -> None:
        ip("netns", "delete", netns, check=False)
        ip("link", "delete", host_veth, check=False)

"""A pod's network identity, as a kubelet and a CNI would give it on this node: its address, its
hostname and subdomain, the kubelet-managed /etc/hosts, /etc/hostname and /etc/resolv.conf (pointing at
the cluster DNS, CoreDNS started by the harness), and the argv prefix that runs a container inside them.

With a pod bridge (`cni.py`; the `local_runner` fixture makes one when the machine allows it) each pod has a
network namespace and an address of its own on the bridge, shared by its containers: EndpointSlices carry
real pod addresses, pods listen on the same ports without colliding and meet over the bridge, the host
reaches them at their IPs. Without one (no CAP_NET_ADMIN) every pod runs in the node's network namespace,
like a `hostNetwork` pod, and reports the node's address (`POD_IP`; the API server refuses 127.0.0.0/8 in
EndpointSlices). Either way a pod gets a UTS namespace with its hostname and a mount namespace in which the
three files above are bind-mounted over the host's (`sandbox.py`), so getaddrinfo in the pod resolves
`<host>.<subdomain>.<ns>.svc.cluster.local` and Service names through the cluster DNS, and its own name
through /etc/hosts, exactly as in a cluster. With the bridge the runner's Service proxy (serviceproxy.py)
routes ClusterIPs; without it a ClusterIP resolves but is not routed (headless Services and EndpointSlice
addresses are). Not provided: NetworkPolicy enforcement, egress beyond this machine."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .cni import PodSandboxNetwork
from .node import POD_IP

CLUSTER_DOMAIN = "cluster.local"
SANDBOX = Path(__file__).with_name("sandbox.py")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
MAX_HOSTNAME = 63


@dataclass(frozen=True)
class PodNetwork:
    """The identity files of one pod, written into its directory and mounted over /etc in its containers."""

    ip: str
    netns: Path | None
    hostname: str
    fqdn: str | None
    hosts: Path
    hostname_file: Path
    resolv_conf: Path

    def sandbox_argv(self, argv: list[str]) -> list[str]:
        """`argv` inside the pod's network namespace (if it has one) and its own UTS and mount namespaces
        (sandbox.py enters them, then execs it)."""
        binds = {self.hosts: Path("/etc/hosts"), self.hostname_file: Path("/etc/hostname"),
                 self.resolv_conf: Path("/etc/resolv.conf")}
        return sandbox_argv(argv, binds, hostname=self.hostname, netns=self.netns)


def sandbox_argv(argv: list[str], binds: dict[Path, Path], *, hostname: str | None = None,
                 netns: Path | None = None) -> list[str]:
    """`argv` in a mount namespace of its own with `binds` (source: target) mounted, and, when given, in
    network namespace `netns` and a UTS namespace named `hostname` (sandbox.py enters them, then execs it)."""
    return [sys.executable, "-I", "-S", str(SANDBOX), *(["--netns", str(netns)] if netns else []),
            *(["--hostname", hostname] if hostname else []),
            *[a for source, target in binds.items() for a in ("--bind", f"{source}:{target}")], "--", *argv]


def pod_hostname(pod: dict) -> tuple[str, str | None]:
    """(hostname, fqdn): spec.hostname or the pod name (cut to 63 characters, as the kubelet does), and with
    spec.subdomain the name `<hostname>.<subdomain>.<ns>.svc.cluster.local` a headless Service gives it."""
    spec, md = pod["spec"], pod["metadata"]
    hostname = (spec.get("hostname") or md["name"])[:MAX_HOSTNAME].rstrip("-.")
    sub = spec.get("subdomain")
    return hostname, f"{hostname}.{sub}.{md['namespace']}.svc.{CLUSTER_DOMAIN}" if sub else None


def hosts_file(pod: dict, hostname: str, fqdn: str | None, pod_ip: str) -> str:
    """The kubelet's managed /etc/hosts: localhost entries, the pod's own names, then spec.hostAliases."""
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters",
             "\t".join([pod_ip, *([fqdn] if fqdn else []), hostname])]
    aliases = pod["spec"].get("hostAliases") or []
    if aliases:
        lines.append("\n# Entries added by HostAliases.")
        lines += ["\t".join([a["ip"], *a.get("hostnames", [])]) for a in aliases]
    return "\n".join(lines) + "\n"


def resolv_conf(pod: dict, cluster_dns: str | None) -> str:
    """/etc/resolv.conf per the pod's dnsPolicy: ClusterFirst (the default) names the cluster DNS and the
    namespace's search path, Default copies the node's, None takes only spec.dnsConfig (merged last, as the
    kubelet merges it)."""
    spec, ns = pod["spec"], pod["metadata"]["namespace"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy == "Default" or (policy.startswith("ClusterFirst") and cluster_dns is None):
        for line in HOST_RESOLV_CONF.read_text().splitlines():
            key, _, rest = line.partition(" ")
            {"nameserver": nameservers, "search": searches, "options": options}.get(key, []).extend(rest.split())
    elif policy.startswith("ClusterFirst"):
        nameservers = [str(cluster_dns)]
        searches = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        options = ["ndots:5"]
    cfg = spec.get("dnsConfig") or {}
    nameservers += [n for n in cfg.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in cfg.get("searches") or [] if s not in searches]
    options += [o["name"] + (f":{o['value']}" if o.get("value") else "") for o in cfg.get("options") or []]
    lines = [f"search {' '.join(searches)}"] if searches else []
    lines += [f"nameserver {n}" for n in nameservers[:3]]
    lines += [f"options {' '.join(options)}"] if options else []
    return "\n".join(lines) + "\n"


def prepare_network(pod: dict, pod_dir: Path, cluster_dns: str | None, sandbox: PodSandboxNetwork | None) -> PodNetwork:
    """Write the pod's identity files into `pod_dir/etc` (once per pod, shared by its containers); `sandbox` is
    the pod's own network namespace and address, None for the node's."""
    etc = pod_dir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    hostname, fqdn = pod_hostname(pod)
    net = PodNetwork(sandbox.ip if sandbox else POD_IP, sandbox.netns if sandbox else None, hostname, fqdn,
                     etc / "hosts", etc / "hostname", etc / "resolv.conf")
    net.hosts.write_text(hosts_file(pod, hostname, fqdn, net.ip))
    net.hostname_file.write_text(hostname + "\n")
    net.resolv_conf.write_text(resolv_conf(pod, cluster_dns))
    return net

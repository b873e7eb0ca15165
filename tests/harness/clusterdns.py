"""Cluster DNS for the test control plane: upstream CoreDNS with its `kubernetes` plugin (built by
scripts/build-controlplane.sh from tests/tools/ft-coredns), answering `cluster.local` from the
API server's Services and EndpointSlices, so the local pod runner's pods resolve headless-Service,
pod-hostname and Service names as in a cluster.

It listens on port 53 (resolv.conf has no port field) of the node's address on the pod bridge, where pods
in network namespaces of their own reach the host (podrunner/cni.py), or, without a pod bridge, of a loopback
address of its own in 127.53.0.0/16, picked per run so that concurrent test sessions on one machine do not
collide; nothing but that address is bound. It forwards nothing: names outside the cluster are not answered (pods here need none).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness.cluster import BIN_DIR, ClusterError, _set_pdeathsig

BINARY = "ft-coredns"
DNS_PORT = 53
READY_PORT = 8181

COREFILE = """\
.:{port} {{
    bind {address}
    ready {address}:{ready_port}
    errors
    log
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
}}
"""


def free_address() -> str:
    """A 127.53.x.y address whose UDP and TCP port 53 are free (derived from this process id, then probed)."""
    pid = os.getpid()
    for i in range(256):
        n = (pid + i * 7919) % 65024 + 256
        address = f"127.53.{n >> 8}.{n & 255}"
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((address, DNS_PORT))
            return address
        except OSError:
            continue
    raise ClusterError("no free 127.53.x.y address for the cluster DNS")


@dataclass
class ClusterDNS:
    """A running CoreDNS: `address` is the nameserver pods get in their resolv.conf."""

    address: str
    proc: subprocess.Popen
    log_file: Path

    @classmethod
    def start(cls, kubeconfig: str | os.PathLike, work_dir: Path, logs_dir: Path, timeout: float = 60,
              address: str | None = None) -> ClusterDNS:
        binary = BIN_DIR / BINARY
        if not binary.exists():
            raise ClusterError(f"{binary} is missing: run scripts/build-controlplane.sh")
        address = address or free_address()
        work_dir.mkdir(parents=True, exist_ok=True)
        corefile = work_dir / "Corefile"
        corefile.write_text(COREFILE.format(port=DNS_PORT, address=address, ready_port=READY_PORT,
                                            kubeconfig=Path(kubeconfig).resolve()))
        log_file = Path(logs_dir) / "coredns.log"
        with open(log_file, "ab") as f:
            proc = subprocess.Popen([str(binary), "-conf", str(corefile)], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(work_dir), preexec_fn=_set_pdeathsig)
        dns = cls(address, proc, log_file)
        deadline = time.monotonic() + timeout
        while not dns.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                dns.stop()
                raise ClusterError(f"CoreDNS did not become ready (exit {proc.returncode}):\n"
                                   f"{log_file.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        return dns

    def ready(self) -> bool:
        """The ready plugin answers 200 once the kubernetes plugin has synced with the API server."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        try:
            with opener.open(f"http://{self.address}:{READY_PORT}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

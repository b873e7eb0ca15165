"""The `local_runner` fixture's handle on a runner subprocess, the node's pod bridge and its cluster DNS: set up
the bridge (or, where the machine cannot, note why: pods then share the host's network), start CoreDNS on the
bridge's host address and the runner, wait for the node, read pod directories and container logs (every run's
output, appended; `kubectl logs` serves one run), stop all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness.clusterdns import ClusterDNS

from .cni import PodBridge
from .network import resolv_conf
from .node import NODE_NAME, NODE_SELECTOR, TOLERATIONS


class LocalRunnerProcess:
    """A `python -m tests.harness.podrunner` subprocess for a Cluster, with the cluster DNS its pods resolve
    through (what the `local_runner` fixture yields). Attributes: node_name, work_dir, log_file, dns,
    node_selector, tolerations, bridge (None when pods share the host's network) and host_address: where pods
    reach a service on this machine (bind test services there; the bridge's address, else 127.0.0.1)."""

    node_selector = NODE_SELECTOR
    tolerations = TOLERATIONS

    def __init__(self, cluster: Any, work_dir: Path, proc: subprocess.Popen, log_file: Path, node_name: str,
                 dns: ClusterDNS, bridge: PodBridge | None) -> None:
        self.cluster = cluster
        self.dns = dns
        self.bridge = bridge
        self.host_address = str(bridge.gateway) if bridge else "127.0.0.1"
        self.work_dir = work_dir
        self.proc = proc
        self.log_file = log_file
        self.node_name = node_name

    @classmethod
    def start(cls, cluster: Any, work_dir: str | os.PathLike, *, node_name: str = NODE_NAME,
              timeout: float = 60) -> LocalRunnerProcess:
        from tests.harness.cluster import REPO, _set_pdeathsig, wait_nodes_ready

        work = Path(work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        bridge = PodBridge.create()
        network_args = bridge.cli_args() if isinstance(bridge, PodBridge) else ["--no-pod-network-reason", bridge]
        bridge = bridge if isinstance(bridge, PodBridge) else None
        try:
            dns = ClusterDNS.start(cluster.kubeconfig, work / "coredns", Path(cluster.logs_dir),
                                   address=str(bridge.gateway) if bridge else None)
        except BaseException:
            if bridge:
                bridge.delete()
            raise
        log_file = Path(cluster.logs_dir) / "podrunner.log"
        cmd = [sys.executable, "-m", "tests.harness.podrunner", "--kubeconfig", cluster.kubeconfig,
               "--work-dir", str(work), "--node-name", node_name, "--cluster-dns", dns.address, *network_args]
        if getattr(cluster, "pv_root", None):
            cmd += ["--pvc-root", str(cluster.pv_root)]
        if getattr(cluster, "external", False):
            cmd += ["--delete-node-on-exit"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
        env.pop("KUBECONFIG", None)
        with open(log_file, "ab") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(REPO), preexec_fn=_set_pdeathsig)
        runner = cls(cluster, work, proc, log_file, node_name, dns, bridge)
        try:
            wait_nodes_ready(_ProcCheck(cluster, proc, log_file), [node_name], timeout=timeout)
        except BaseException:
            runner.stop()
            raise
        return runner

    def resolv_conf(self, namespace: str) -> str:
        """The resolv.conf of a ClusterFirst pod in `namespace` (cluster DNS, the namespace's search path)."""
        return resolv_conf({"metadata": {"namespace": namespace}, "spec": {}}, self.dns.address)

    def pod_dir(self, namespace: str, pod: str) -> Path:
        """The newest working directory of a pod (by name)."""
        dirs = sorted((self.work_dir / "pods").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
        if not dirs:
            raise FileNotFoundError(f"no local-runner directory for pod {namespace}/{pod}")
        return dirs[-1]

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output (stdout+stderr) of all its runs, in order."""
        d = self.pod_dir(namespace, pod)
        if container is None:
            files = sorted(d.glob("*.log"))
            if len(files) != 1:
                raise ValueError(f"pod {namespace}/{pod} has containers {[f.stem for f in files]}: name one")
            return files[0].read_text(errors="replace")
        return (d / f"{container}.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 40) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.dns.stop()
        if self.bridge:  # the runner removes it when it stops; this covers a runner that was killed
            self.bridge.delete()


class _ProcCheck:
    """Adapter so wait_nodes_ready also notices a dead runner process."""

    def __init__(self, cluster: Any, proc: subprocess.Popen, log_file: Path) -> None:
        self._c, self._p, self._log = cluster, proc, log_file

    def check_alive(self) -> None:
        self._c.check_alive() if hasattr(self._c, "check_alive") and not getattr(self._c, "external", False) else None
        if self._p.poll() is not None:
            raise RuntimeError(f"local pod runner exited with {self._p.returncode}:\n"
                               f"{self._log.read_text(errors='replace')[-4000:]}")

    def kubectl(self, *a: Any, **kw: Any) -> Any:
        return self._c.kubectl(*a, **kw)

    def log_tail(self, lines: int = 40) -> str:
        return self._c.log_tail(lines)

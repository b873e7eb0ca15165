"""The runner: the node, the watch on pods bound to it, and one PodWorker thread per pod."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .cni import BridgeCNI
from .kubelet_logs import LogServer
from .node import NODE_NAME, POD_IP, NodeAgent
from .serviceproxy import ServiceProxy
from .worker import PodWorker

# Environment variables passed from the runner to every container (besides PATH and HOME).
PASSTHROUGH_ENV = [
    "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL", "TERM",
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "XDG_CACHE_HOME",
    "TORCH_EXTENSIONS_DIR", "TRITON_CACHE_DIR", "PIP_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
]

log = logging.getLogger("podrunner")


class Runner:
    def __init__(
        self,
        api_client: Any,
        work_dir: str | os.PathLike,
        *,
        node_name: str = NODE_NAME,
        pvc_root: str | os.PathLike | None = None,
        venv_bin: str | os.PathLike | None = None,
        capacity: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        stop_grace: float = 5.0,
        cluster_dns: str | None = None,
        pod_bridge: str | None = None,
        pod_cidr: str | None = None,
        no_pod_network_reason: str | None = None,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.node_name = node_name
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.pvc_root = Path(pvc_root) if pvc_root else self.work_dir / "pvc"
        self.capacity = capacity or {"cpu": "64", "memory": "512Gi", "pods": "110",
                                     "ephemeral-storage": "1Ti", "nvidia.com/gpu": "8"}
        # the pod network: a bridge CNI when the node has a pod bridge, else the node's own network namespace
        self.cni = BridgeCNI(pod_bridge, pod_cidr) if pod_bridge and pod_cidr else None
        self.node_ip = str(self.cni.gateway) if self.cni else POD_IP
        self.pod_ips: dict[str, str] = {}  # pod uid -> its address, for the downward API
        self.stopping = threading.Event()
        self.service_proxy = ServiceProxy(api_client, self.cni.bridge, self.cni.network, self.stopping) if self.cni else None
        if self.cni:
            log.info("pod network: bridge %s, pods get addresses in %s (node address %s)", pod_bridge, pod_cidr,
                     self.node_ip)
        else:
            log.warning("pod network: none (%s): pods share the node's network namespace and address %s, "
                        "like hostNetwork pods; no Service proxy: ClusterIPs are not routed (clients must call "
                        "endpoint addresses)", no_pod_network_reason or "no --pod-bridge given", self.node_ip)
        self.log_server = LogServer(self, self.node_ip)
        self.node = NodeAgent(self.core, self.coord, node_name, self.capacity, labels or {}, self.log_server.port,
                              self.node_ip, str(self.cni.network) if self.cni else None)
        self.stop_grace = stop_grace
        self.cluster_dns = cluster_dns  # the nameserver of ClusterFirst pods (network.py)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.base_env = self._base_env(api_client, Path(venv_bin) if venv_bin else Path(sys.executable).parent)

    def _base_env(self, api_client: Any, venv_bin: Path) -> dict[str, str]:
        """What every container starts with: the passthrough variables, the venv first on PATH, and the
        in-cluster API address (a client in a pod finds the apiserver as in a cluster)."""
        host = api_client.configuration.host  # https://127.0.0.1:PORT
        m = re.match(r"https?://([^:/]+)(?::(\d+))?", host)
        api_host, api_port = (m.group(1), m.group(2) or "443") if m else ("127.0.0.1", "443")
        base = {k: os.environ[k] for k in PASSTHROUGH_ENV + os.environ.get("FT_RUNNER_PASSTHROUGH_ENV", "").split(",")
                if k and k in os.environ}
        base["PATH"] = os.pathsep.join([str(venv_bin), os.environ.get("PATH", "/usr/bin:/bin")])
        base["HOME"] = os.environ.get("HOME", str(self.work_dir))
        if (venv_bin.parent / "pyvenv.cfg").exists():
            base["VIRTUAL_ENV"] = str(venv_bin.parent)
        base.update({"KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": api_port,
                     "KUBERNETES_SERVICE_PORT_HTTPS": api_port})
        return base

    def _heartbeat_loop(self) -> None:
        n = 0
        while not self.stopping.wait(10):
            n += 1
            try:
                self.node.renew_lease()
                if n % 3 == 0:
                    self.node.heartbeat_status()
            except Exception as e:
                log.warning("heartbeat failed: %s", e)

    # -- pods
    def worker_done(self, w: PodWorker) -> None:
        with self.lock:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]
            self.finished.add(w.uid)

    def on_pod(self, pod: dict) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if w is not None:
                w.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if uid in self.finished or phase in ("Succeeded", "Failed") or md.get("deletionTimestamp"):
                self.finished.add(uid)
                if md.get("deletionTimestamp"):
                    threading.Thread(target=self.delete_pod, args=(md["namespace"], md["name"], uid),
                                     daemon=True).start()
                return
            w = PodWorker(self, pod)
            self.workers[uid] = w
            w.update(pod)
        log.info("pod %s/%s accepted", md["namespace"], md["name"])
        w.start()

    def delete_pod(self, ns: str, name: str, uid: str) -> None:
        """Remove the pod object at once, as a kubelet does after the containers ended (this pod only: uid)."""
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0,
                                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("delete pod %s/%s: %s", ns, name, e)

    def on_deleted(self, pod: dict) -> None:
        with self.lock:
            w = self.workers.get(pod["metadata"]["uid"])
        if w is not None:
            w.gone.set()

    def _watch_loop(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        selector = f"spec.nodeName={self.node_name}"
        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    data = json.loads(self.core.list_pod_for_all_namespaces(
                        field_selector=selector, _preload_content=False).data)
                    rv = data["metadata"]["resourceVersion"]
                    live = set()
                    for p in data["items"]:
                        live.add(p["metadata"]["uid"])
                        self.on_pod(p)
                    with self.lock:
                        stale = [w for uid, w in self.workers.items() if uid not in live]
                    for w in stale:
                        w.gone.set()
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=rv, timeout_seconds=30, allow_watch_bookmarks=True):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    obj = ev["raw_object"]
                    if ev["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    if ev["type"] == "DELETED":
                        self.on_deleted(obj)
                    else:
                        self.on_pod(obj)
            except ApiException as e:
                if e.status == 410:
                    rv = None
                else:
                    log.warning("watch error: %s", e)
                    time.sleep(1)
            except Exception as e:
                if not self.stopping.is_set():
                    log.warning("watch error: %s: %s", type(e).__name__, e)
                    rv = None
                    time.sleep(1)

    def run(self, ready: threading.Event | None = None) -> None:
        self.log_server.start()
        self.node.register()
        if self.service_proxy is not None:
            self.service_proxy.start()
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        if ready:
            ready.set()
        self._watch_loop()

    def stop(self, delete_node: bool = False) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.join(self.stop_grace + 15)
        self.log_server.stop()
        if self.service_proxy is not None:
            self.service_proxy.stop()
        if self.cni is not None:  # the bridge goes with its node, also when the fixture's process was killed
            self.cni.delete_bridge()
        if delete_node:
            try:
                self.core.delete_node(self.node_name)
            except Exception:
                pass

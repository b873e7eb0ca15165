"""One pod's life on the runner, in its own thread: volumes, init containers in order (sidecars keep
running), the main containers with restarts per restartPolicy, and deletion (SIGTERM, then SIGKILL
after terminationGracePeriodSeconds; then the pod object is removed, as a kubelet does)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import processes
from .container import Container, restart_backoff
from .env import container_env
from .cni import PodSandboxNetwork
from .network import PodNetwork, prepare_network
from .probes import probe
from .status import StatusWriter
from .volumes import prepare_volumes

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("podrunner")


class PodWorker(threading.Thread):
    def __init__(self, runner: Runner, pod: dict) -> None:
        md = pod["metadata"]
        super().__init__(name=f"pod-{md['namespace']}/{md['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.ns, self.pod_name, self.uid = md["namespace"], md["name"], md["uid"]
        self.where = f"{self.ns}/{self.pod_name}"
        self.dir = runner.work_dir / "pods" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.lock = threading.Lock()
        self.delete_requested: float | None = None  # grace seconds
        self.gone = threading.Event()  # the API object is gone: kill at once, write nothing
        self.volumes: dict[str, Path] = {}
        self.containers: list[Container] = []
        self.network: PodNetwork | None = None
        self.sandbox: PodSandboxNetwork | None = None  # the pod's own network namespace (with a pod bridge)
        self.init_containers: list[Container] = []
        self.status = StatusWriter(runner.core, self.ns, self.pod_name, runner.node_ip)
        self.phase = "Pending"
        self.message: str | None = None
        self.reason: str | None = None

    # called from the watch thread
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            md = pod["metadata"]
            if md.get("deletionTimestamp") and self.delete_requested is None:
                self.delete_requested = float(
                    md.get("deletionGracePeriodSeconds")
                    if md.get("deletionGracePeriodSeconds") is not None
                    else pod["spec"].get("terminationGracePeriodSeconds", 30)
                )

    @property
    def spec(self) -> dict:
        return self.pod["spec"]

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # never leave a pod silently stuck
            log.exception("pod %s/%s: runner error", self.ns, self.pod_name)
            self._kill_all(0)
            if not self.gone.is_set():
                self.phase, self.reason, self.message = "Failed", "LocalRunnerError", f"{type(e).__name__}: {e}"
                self._send_status(force=True)
        finally:
            self._release_network()
            self.runner.worker_done(self)

    def _release_network(self) -> None:
        """Tear the pod's network namespace down with the pod (its processes have all been stopped)."""
        self.runner.pod_ips.pop(self.uid, None)
        if self.sandbox is not None and self.runner.cni is not None:
            self.runner.cni.delete(self.sandbox)
            self.sandbox = None

    # -- main loop
    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.runner.cni is not None:
            self.sandbox = self.runner.cni.add()
            log.info("pod %s: network namespace %s, address %s", self.where, self.sandbox.name, self.sandbox.ip)
        self.network = prepare_network(self.pod, self.dir, self.runner.cluster_dns, self.sandbox)
        self.runner.pod_ips[self.uid] = self.status.pod_ip = self.network.ip
        spec = self.spec
        policy = spec.get("restartPolicy", "Always")
        for c in spec.get("initContainers") or []:
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.init_containers.append(Container(c, kind))
        self.containers = [Container(c, "main") for c in spec["containers"]]
        for c in self.init_containers:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        self.status.set_condition("PodReadyToStartContainers", False)
        self.status.set_condition("Initialized", not any(c.kind == "init" for c in self.init_containers))
        self.status.set_condition("ContainersReady", False, "ContainersNotReady")
        self.status.set_condition("Ready", False, "ContainersNotReady")
        self._send_status(force=True)

        # volumes (retry while a referenced ConfigMap/Secret/PVC does not exist yet)
        while True:
            if self._deleting():
                return self._finish_deleted()
            try:
                prepare_volumes(self.runner, self.pod, self.dir, self.volumes)
                for c in self.init_containers + self.containers:
                    self._prepare_container(c)
                break
            except Exception as e:
                msg = f"{type(e).__name__}: {e}"
                for c in self.init_containers + self.containers:
                    c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": msg[:1000]}}
                self._send_status()
                time.sleep(1)
        self.status.set_condition("PodReadyToStartContainers", True)

        # init containers, in order
        for c in self.init_containers:
            self._start(c)
            if c.kind == "sidecar":
                continue
            while not c.done:
                if self._deleting():
                    return self._finish_deleted()
                self._tick([c] + [s for s in self.init_containers if s.kind == "sidecar"], policy)
                self._send_status()
                time.sleep(0.1)
            if c.state.get("terminated", {}).get("exitCode") != 0:
                self.phase = "Failed"
                self._kill_all(self._grace())
                self._send_status(force=True)
                return self._await_deletion()
        self.status.set_condition("Initialized", True)

        for c in self.containers:
            self._start(c)
        self.phase = "Running"
        self._send_status(force=True)
        while True:
            if self._deleting():
                return self._finish_deleted()
            sidecars = [s for s in self.init_containers if s.kind == "sidecar"]
            self._tick(self.containers + sidecars, policy)
            if all(c.done for c in self.containers):
                self._kill_all(self._grace(), only=sidecars)
                codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in self.containers]
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self._update_ready()
                self._send_status(force=True)
                return self._await_deletion()
            self._update_ready()
            self._send_status()
            time.sleep(0.1)

    def _grace(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    def _deleting(self) -> bool:
        with self.lock:
            return self.gone.is_set() or self.delete_requested is not None or self.runner.stopping.is_set()

    def _await_deletion(self) -> None:
        """A terminal pod keeps its status (and its podIP there) but not its network namespace, as with a
        kubelet; when it gets deleted, finish the deletion."""
        self._release_network()
        while not self.gone.is_set() and not self.runner.stopping.is_set():
            with self.lock:
                if self.delete_requested is not None:
                    break
            time.sleep(0.2)
        if not self.gone.is_set() and not self.runner.stopping.is_set():
            self._delete_pod_object()

    def _finish_deleted(self) -> None:
        if self.runner.stopping.is_set():
            self._kill_all(min(self._grace(), self.runner.stop_grace))
            return
        grace = 0.0 if self.gone.is_set() else (self.delete_requested or 0.0)
        grace -= self._pre_stop(grace)
        self._kill_all(grace)
        if self.gone.is_set():
            return
        codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.containers]
        if self.phase not in ("Succeeded", "Failed"):
            self.phase = "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
        self._update_ready()
        self._send_status(force=True)
        self._delete_pod_object()

    def _pre_stop(self, grace: float) -> float:
        """The running containers' `lifecycle.preStop.sleep` before their SIGTERM, as the kubelet runs it, within
        the grace (other handlers are not run here); seconds slept. Meanwhile the containers keep serving
        (a vLLM server answers requests sent before its endpoint was dropped); a forced deletion cuts it short."""
        seconds = max((float(((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
                       for c in self.containers if c.running), default=0.0)
        end = time.monotonic() + min(seconds, grace)
        started = time.monotonic()
        while time.monotonic() < end and not self.gone.is_set() and not self.runner.stopping.is_set():
            time.sleep(0.1)
        return time.monotonic() - started

    def _delete_pod_object(self) -> None:
        self.runner.delete_pod(self.ns, self.pod_name, self.uid)

    # -- containers
    def _tick(self, containers: list[Container], policy: str) -> None:
        t = time.monotonic()
        for c in containers:
            if c.proc is None:
                if not c.done and c.next_restart and t >= c.next_restart:
                    self._start(c)
                continue
            rc = c.proc.poll()
            if rc is None:
                if c.kill_deadline is not None and t >= c.kill_deadline:
                    processes.send_signal(c, signal.SIGKILL)
                    c.kill_deadline = None
                assert self.network is not None
                probe(c, t, self._grace(), self.runner.base_env, self.network, self.where)
                continue
            # exited
            processes.record_exit(c, rc, self.where)
            restart = (
                c.kind == "sidecar"
                or policy == "Always" and c.kind == "main"
                or policy == "OnFailure" and rc != 0
                or c.kind == "init" and policy != "Never" and rc != 0
            )
            if restart and not self._deleting():
                backoff = restart_backoff(c.restart_count)
                c.last_state = {"terminated": c.state["terminated"]}
                c.state = {"waiting": {"reason": "CrashLoopBackOff" if rc != 0 else "Completed",
                                       "message": f"back-off {backoff:.1f}s restarting container {c.name}"}}
                c.proc = None
                c.restart_count += 1
                c.next_restart = t + backoff
            else:
                c.proc = None
                c.done = True

    def _kill_all(self, grace: float, only: list[Container] | None = None) -> None:
        processes.stop(only if only is not None else self.init_containers + self.containers, grace, self.gone,
                       self.where)
        if only is None:
            for c in self.init_containers + self.containers:
                c.done = True  # never started or waiting for a restart: it stays as it is

    def _start(self, c: Container) -> None:
        if c.pathmap is None:
            self._prepare_container(c)
        assert self.network is not None
        processes.start(c, self.runner.base_env, self.network, self.spec.get("restartPolicy", "Always"), self.where)

    def _prepare_container(self, c: Container) -> None:
        env = container_env(self.runner, self.pod, c.spec)
        c.prepare(self.dir, self.volumes, env)

    # -- status
    def _update_ready(self) -> None:
        with self.lock:
            current = {c["type"]: c["status"] for c in (self.pod.get("status") or {}).get("conditions") or []}
        self.status.update_ready(self.phase, self.containers, self.init_containers, current,
                                 self.spec.get("readinessGates") or [])

    def _send_status(self, force: bool = False) -> None:
        self.status.send(self.phase, self.reason, self.message, self.containers, self.init_containers, self.gone,
                         force=force)

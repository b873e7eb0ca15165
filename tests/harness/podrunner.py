"""Local pod runner: a stand-in kubelet that runs pods as local processes (DESIGN.md §8, e2e tier).

It registers the Node `local-runner` (kept Ready through its Lease and status heartbeats; kwok
does not manage it), watches the pods bound to it and runs each container's command+args (an exec
list, never a shell) as a process group with the runner's Python environment first on PATH (the
repo's `.venv`: `python` in a container command is the venv's python). It writes the pod status
back like a kubelet: Pending -> Running -> Succeeded/Failed, containerStatuses (running /
terminated with exitCode, reason and the termination message), podIP 127.0.0.1, Ready from the
readinessProbe (httpGet / tcpSocket / exec), restarts per restartPolicy, and on deletion sends
SIGTERM to the process group and SIGKILL after terminationGracePeriodSeconds.

Scheduling: the node is tainted `finetune.dev/local-runner=true:NoSchedule` and labelled
`finetune.dev/local-runner=true`; a pod runs here only with NODE_SELECTOR and TOLERATIONS below.

Paths: each volumeMount.mountPath (and terminationMessagePath, workingDir) is mapped to a host
directory (emptyDir/configMap/secret/projected/downwardAPI -> a per-pod directory; PVC -> the PV's
hostPath or `<pvc-root>/<namespace>/<claim>`, shared by all pods of the claim; hostPath -> the same
path). Programs cannot see that mapping, so mount paths are substituted *textually* in command,
args, env values and in the text files materialised from configMap/secret volumes; a path a
program builds at run time or reads from elsewhere is not mapped (documented limitation). Host
names of the pod's own subdomain (`<host>.<subdomain>[.<ns>[.svc[.cluster.local]]]`) are
rewritten to 127.0.0.1 in the same way, so Indexed Job peers find each other on loopback.

Run: `python -m tests.harness.podrunner --kubeconfig K --work-dir D` (the `local_runner` pytest
fixture does this). Container logs: `<work-dir>/pods/<ns>_<pod>_<uid8>/<container>.log`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

NODE_NAME = "local-runner"
RUNNER_LABEL = "finetune.dev/local-runner"
TAINT = {"key": RUNNER_LABEL, "value": "true", "effect": "NoSchedule"}
NODE_SELECTOR = {RUNNER_LABEL: "true"}
TOLERATIONS = [{"key": RUNNER_LABEL, "operator": "Exists", "effect": "NoSchedule"}]


def _host_ip() -> str:
    """This machine's primary address: EndpointSlices refuse loopback addresses, so pods report
    the host's own IP (every process listens on all interfaces); 127.0.0.1 when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


POD_IP = _host_ip()
TERMINATION_MESSAGE_LIMIT = 4096
# Environment variables passed from the runner to every container (besides PATH and HOME).
PASSTHROUGH_ENV = [
    "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL", "TERM",
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "XDG_CACHE_HOME",
    "TORCH_EXTENSIONS_DIR", "TRITON_CACHE_DIR", "PIP_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
]

log = logging.getLogger("podrunner")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_spec_for_runner(pod_spec: dict) -> dict:
    """Return a copy of a pod spec (dict) that schedules onto the local runner."""
    spec = dict(pod_spec)
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **NODE_SELECTOR}
    spec["tolerations"] = list(spec.get("tolerations") or []) + TOLERATIONS
    return spec


# -- helpers -----------------------------------------------------------------------------------

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


def parse_quantity(q: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity as pq

    return float(pq(str(q)))


def _safe_join(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if not str(p).startswith(str(root.resolve())):
        raise ValueError(f"path {rel!r} escapes the volume")
    return p


# -- containers --------------------------------------------------------------------------------

class Probe:
    def __init__(self, spec: dict | None) -> None:
        self.spec = spec or None
        self.ok: bool | None = None
        self.successes = 0
        self.failures = 0
        self.next_at = 0.0

    def reset(self, start: float) -> None:
        self.ok = None
        self.successes = self.failures = 0
        if self.spec:
            self.next_at = start + float(self.spec.get("initialDelaySeconds", 0))


def restart_backoff(restarts: int) -> float:
    """The kubelet's crash-loop back-off, shortened for tests: 0.5 s doubling up to 10 s."""
    return min(10.0, 0.5 * (2 ** min(restarts, 5)))


class Container:
    def __init__(self, spec: dict, kind: str) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.kind = kind  # "init", "sidecar" (init with restartPolicy Always) or "main"
        self.proc: subprocess.Popen | None = None
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.started_at: str | None = None
        self.started = False
        self.ready = False
        self.done = False  # terminated and will not be restarted
        self.next_restart = 0.0
        self.kill_deadline: float | None = None
        self.term_host: Path | None = None
        self.log_path: Path | None = None
        self.pathmap: PathMap | None = None
        self.env: dict[str, str] = {}
        self.cwd: str = "."
        self.startup = Probe(spec.get("startupProbe"))
        self.readiness = Probe(spec.get("readinessProbe"))
        self.liveness = Probe(spec.get("livenessProbe"))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict:
        st = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
        }
        if self.proc is not None:
            st["containerID"] = f"local://{self.proc.pid}"
        if self.last_state:
            st["lastState"] = self.last_state
        return st


# -- one pod -----------------------------------------------------------------------------------

class PodWorker(threading.Thread):
    def __init__(self, runner: Runner, pod: dict) -> None:
        md = pod["metadata"]
        super().__init__(name=f"pod-{md['namespace']}/{md['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.ns, self.pod_name, self.uid = md["namespace"], md["name"], md["uid"]
        self.dir = runner.work_dir / "pods" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.lock = threading.Lock()
        self.delete_requested: float | None = None  # grace seconds
        self.gone = threading.Event()  # the API object is gone: kill at once, write nothing
        self.volumes: dict[str, Path] = {}
        self.containers: list[Container] = []
        self.init_containers: list[Container] = []
        self.conditions: dict[str, dict] = {}
        self.phase = "Pending"
        self.start_time = now()
        self.last_sent: Any = None
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
            self.runner.worker_done(self)

    # -- main loop
    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        spec = self.spec
        policy = spec.get("restartPolicy", "Always")
        for c in spec.get("initContainers") or []:
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.init_containers.append(Container(c, kind))
        self.containers = [Container(c, "main") for c in spec["containers"]]
        for c in self.init_containers:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        self._set_condition("PodReadyToStartContainers", False)
        self._set_condition("Initialized", not any(c.kind == "init" for c in self.init_containers))
        self._set_condition("ContainersReady", False, "ContainersNotReady")
        self._set_condition("Ready", False, "ContainersNotReady")
        self._send_status(force=True)

        # volumes (retry while a referenced ConfigMap/Secret/PVC does not exist yet)
        while True:
            if self._deleting():
                return self._finish_deleted()
            try:
                self._prepare_volumes()
                for c in self.init_containers + self.containers:
                    self._prepare_container(c)
                break
            except Exception as e:
                msg = f"{type(e).__name__}: {e}"
                for c in self.init_containers + self.containers:
                    c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": msg[:1000]}}
                self._send_status()
                time.sleep(1)
        self._set_condition("PodReadyToStartContainers", True)

        # init containers, in order
        for c in self.init_containers:
            self._start(c)
            if c.kind == "sidecar":
                continue
            while not c.done:
                if self._deleting():
                    return self._finish_deleted()
                self._tick([c] + [s for s in self.init_containers if s.kind == "sidecar"], policy, init=True)
                self._send_status()
                time.sleep(0.1)
            if c.state.get("terminated", {}).get("exitCode") != 0:
                self.phase = "Failed"
                self._kill_all(self._grace())
                self._send_status(force=True)
                return self._await_deletion()
        self._set_condition("Initialized", True)

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
        """A terminal pod keeps its status; when it gets deleted, finish the deletion."""
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
        self._kill_all(grace)
        if self.gone.is_set():
            return
        codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.containers]
        if self.phase not in ("Succeeded", "Failed"):
            self.phase = "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
        self._update_ready()
        self._send_status(force=True)
        self._delete_pod_object()

    def _delete_pod_object(self) -> None:
        self.runner.delete_pod(self.ns, self.pod_name, self.uid)

    # -- containers
    def _tick(self, containers: list[Container], policy: str, init: bool = False) -> None:
        t = time.monotonic()
        for c in containers:
            if c.proc is None:
                if not c.done and c.next_restart and t >= c.next_restart:
                    self._start(c)
                continue
            rc = c.proc.poll()
            if rc is None:
                if c.kill_deadline is not None and t >= c.kill_deadline:
                    self._signal(c, signal.SIGKILL)
                    c.kill_deadline = None
                self._probe(c, t)
                continue
            # exited
            self._on_exit(c, rc)
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

    def _on_exit(self, c: Container, rc: int) -> None:
        code = rc if rc >= 0 else 128 + (-rc)
        reason = "Completed" if code == 0 else "Error"
        message = ""
        if c.term_host and c.term_host.exists():
            message = c.term_host.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", "replace")
        if not message and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = self._log_tail(c, 80, 2048)
        term = {"exitCode": code, "reason": reason, "startedAt": c.started_at or now(), "finishedAt": now(),
                "containerID": f"local://{c.proc.pid}" if c.proc else ""}
        if message:
            term["message"] = message
        c.state = {"terminated": term}
        c.ready = False
        c.started = False
        log.info("pod %s/%s container %s exited %s", self.ns, self.pod_name, c.name, code)

    @staticmethod
    def _log_tail(c: Container, lines: int, limit: int) -> str:
        if not c.log_path or not c.log_path.exists():
            return ""
        data = c.log_path.read_bytes()[-64 * 1024:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])[-limit:]

    def _signal(self, c: Container, sig: int) -> None:
        if c.proc is not None and c.proc.poll() is None:
            try:
                os.killpg(c.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _kill_all(self, grace: float, only: list[Container] | None = None) -> None:
        targets = [c for c in (only if only is not None else self.init_containers + self.containers)
                   if c.proc is not None]
        for c in targets:
            self._signal(c, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace)
        while any(c.proc.poll() is None for c in targets) and time.monotonic() < deadline:
            if self.gone.is_set():
                break
            time.sleep(0.05)
        for c in targets:
            self._signal(c, signal.SIGKILL)
        for c in targets:
            try:
                rc = c.proc.wait(10)
            except subprocess.TimeoutExpired:
                rc = -9
            self._on_exit(c, rc)
            c.proc = None
            c.done = True
        if only is None:
            for c in self.init_containers + self.containers:
                c.done = True  # never started or waiting for a restart: it stays as it is

    # -- starting a container
    def _start(self, c: Container) -> None:
        if c.pathmap is None:
            self._prepare_container(c)
        spec = c.spec
        argv = [expand_vars(a, c.env) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        argv = [c.pathmap(a) for a in argv]
        if c.term_host is not None:
            c.term_host.parent.mkdir(parents=True, exist_ok=True)
            c.term_host.write_bytes(b"")
        c.started_at = now()
        c.next_restart = 0.0
        if not argv:
            self._fail_start(c, "the local runner needs an explicit command (it has no image entrypoint)")
            return
        env = dict(self.runner.base_env)
        env.update(c.env)
        env["HOSTNAME"] = self.spec.get("hostname") or self.pod_name
        with open(c.log_path, "ab") as logf:
            try:
                c.proc = subprocess.Popen(
                    argv, env=env, cwd=c.cwd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                self._fail_start(c, f"{type(e).__name__}: {e} (argv[0]={argv[0]!r})")
                return
        log.info("pod %s/%s container %s started pid %s: %s", self.ns, self.pod_name, c.name, c.proc.pid, argv)
        c.state = {"running": {"startedAt": c.started_at}}
        t = time.monotonic()
        for p in (c.startup, c.readiness, c.liveness):
            p.reset(t)
        c.started = c.startup.spec is None
        c.ready = False

    def _fail_start(self, c: Container, message: str) -> None:
        log.warning("pod %s/%s container %s: %s", self.ns, self.pod_name, c.name, message)
        c.proc = None
        c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message[:TERMINATION_MESSAGE_LIMIT],
                                  "startedAt": c.started_at, "finishedAt": now()}}
        policy = self.spec.get("restartPolicy", "Always")
        if policy == "Never" and c.kind != "sidecar":
            c.done = True
        else:
            c.last_state = {"terminated": c.state["terminated"]}
            c.restart_count += 1
            c.next_restart = time.monotonic() + restart_backoff(c.restart_count)
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message[:1000]}}

    def _subdomain_hosts(self) -> re.Pattern | None:
        sub = self.spec.get("subdomain")
        if not sub:
            return None
        ns = re.escape(self.ns)
        return re.compile(
            r"(?<![\w.\-])[a-z0-9]([a-z0-9-]*[a-z0-9])?\." + re.escape(sub)
            + r"(\." + ns + r"(\.svc(\.cluster\.local)?)?)?(?![\w\-]|\.[a-z])"
        )

    def _pod_pathmap(self) -> dict[str, str]:
        """Union of all containers' mount mappings (used for volume file contents)."""
        mapping: dict[str, str] = {}
        for cs in (self.spec.get("initContainers") or []) + self.spec["containers"]:
            for m in cs.get("volumeMounts") or []:
                if m["name"] in self.volumes and not m.get("subPathExpr"):
                    host = self.volumes[m["name"]]
                    if m.get("subPath"):
                        host = host / m["subPath"]
                    mapping.setdefault(m["mountPath"], str(host))
        return mapping

    def _prepare_container(self, c: Container) -> None:
        spec = c.spec
        c.env = self._container_env(spec)
        mapping: dict[str, str] = {}
        for m in spec.get("volumeMounts") or []:
            host = self.volumes[m["name"]]
            sub = m.get("subPath") or (expand_vars(m["subPathExpr"], c.env) if m.get("subPathExpr") else "")
            if sub:
                host = _safe_join(host, sub)
                if not host.exists() and not m.get("readOnly"):
                    host.mkdir(parents=True, exist_ok=True)
            mapping[m["mountPath"]] = str(host)
        cdir = self.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = PathMap(mapping)
        term = spec.get("terminationMessagePath") or "/dev/termination-log"
        mapped = tmp.host_path(term)
        if mapped is None:
            c.term_host = cdir / "termination-log"
            mapping[term] = str(c.term_host)
        else:
            c.term_host = Path(mapped)
        wd = spec.get("workingDir")
        if wd:
            mapped = tmp.host_path(wd)
            if mapped is None:
                host_wd = self.dir / "rootfs" / wd.lstrip("/")
                mapping[wd] = str(host_wd)
                mapped = str(host_wd)
            Path(mapped).mkdir(parents=True, exist_ok=True)
            c.cwd = mapped
        else:
            c.cwd = str(cdir)
        c.pathmap = PathMap(mapping, self._subdomain_hosts())
        c.env = {k: c.pathmap(v) for k, v in c.env.items()}
        c.log_path = self.dir / f"{c.name}.log"

    # -- env
    def _field(self, path: str) -> str:
        md = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\[['\"](.+)['\"]\]", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        simple = {
            "metadata.name": md["name"],
            "metadata.namespace": md["namespace"],
            "metadata.uid": md["uid"],
            "spec.nodeName": self.spec.get("nodeName", self.runner.node_name),
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.hostIP": POD_IP,
            "status.hostIPs": POD_IP,
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
        }
        if path in simple:
            return simple[path]
        if path in ("metadata.labels", "metadata.annotations"):
            d = md.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
        raise ValueError(f"unsupported fieldRef {path!r}")

    def _resource_field(self, ref: dict, default_container: dict | None) -> str:
        cname = ref.get("containerName")
        cont = default_container
        if cname:
            cont = next(c for c in self.spec["containers"] + (self.spec.get("initContainers") or [])
                        if c["name"] == cname)
        kind, _, res = ref["resource"].partition(".")
        resources = (cont or {}).get("resources") or {}
        value = (resources.get(kind) or {}).get(res)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(res)
        if value is None:
            value = self.runner.capacity.get(res, "0")
        divisor = parse_quantity(ref.get("divisor") or "1")
        return str(int(math.ceil(parse_quantity(value) / divisor)))

    def _ref_data(self, kind: str, ref: dict, name_key: str = "name") -> dict[str, bytes]:
        """The bytes behind a reference to a ConfigMap (`kind="configMap"`) or a Secret: {} when the
        reference is optional and the object is absent."""
        from kubernetes.client.rest import ApiException

        core = self.runner.core
        read = core.read_namespaced_config_map if kind == "configMap" else core.read_namespaced_secret
        try:
            obj = json.loads(read(ref[name_key], self.ns, _preload_content=False).data)
        except ApiException as e:
            if e.status == 404 and ref.get("optional", False):
                return {}
            raise
        plain, encoded = ("data", "binaryData") if kind == "configMap" else ("stringData", "data")
        data = {k: base64.b64decode(v) for k, v in (obj.get(encoded) or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get(plain) or {}).items()})
        return data

    def _container_env(self, spec: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for field, kind in (("configMapRef", "configMap"), ("secretRef", "secret")):
                if field in src:
                    for k, v in self._ref_data(kind, src[field]).items():
                        env[prefix + k] = v.decode("utf-8", "replace")
        for e in spec.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                env[name] = expand_vars(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[name] = self._resource_field(vf["resourceFieldRef"], spec)
            else:
                for field, kind in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
                    if field in vf:
                        ref = vf[field]
                        data = self._ref_data(kind, ref)
                        if ref["key"] in data:
                            env[name] = data[ref["key"]].decode("utf-8", "replace")
                        elif not ref.get("optional", False):
                            raise KeyError(f"{kind} {ref['name']} has no key {ref['key']}")
        return env

    # -- volumes
    def _prepare_volumes(self) -> None:
        vroot = self.dir / "volumes"
        vroot.mkdir(parents=True, exist_ok=True)
        deferred: list[tuple[Path, dict[str, bytes]]] = []  # text files to path-map after all volumes exist
        for v in self.spec.get("volumes") or []:
            name = v["name"]
            if name in self.volumes:
                continue
            d = vroot / name
            if "persistentVolumeClaim" in v:
                d = self._pvc_dir(v["persistentVolumeClaim"]["claimName"])
            elif "hostPath" in v:
                d = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not d.exists():
                    d.mkdir(parents=True, exist_ok=True)
            elif "configMap" in v:
                deferred.append((d, self._select_items(self._ref_data("configMap", v["configMap"]),
                                                       v["configMap"].get("items"))))
            elif "secret" in v:
                deferred.append((d, self._select_items(self._ref_data("secret", v["secret"], "secretName"),
                                                       v["secret"].get("items"))))
            elif "projected" in v:
                deferred.append((d, self._projected(v["projected"])))
            elif "downwardAPI" in v:
                deferred.append((d, self._downward_items(v["downwardAPI"].get("items") or [])))
            elif "emptyDir" in v or "ephemeral" in v:
                pass
            else:
                log.warning("pod %s/%s volume %s: unsupported type %s, using an empty directory",
                            self.ns, self.pod_name, name, sorted(set(v) - {"name"}))
            d.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = d
        pm = PathMap(self._pod_pathmap(), self._subdomain_hosts())
        for d, files in deferred:
            for rel, content in files.items():
                p = _safe_join(d, rel)
                p.parent.mkdir(parents=True, exist_ok=True)
                try:
                    content = pm(content.decode("utf-8")).encode("utf-8")
                except UnicodeDecodeError:
                    pass
                p.write_bytes(content)

    @staticmethod
    def _select_items(data: dict[str, bytes], items: list | None) -> dict[str, bytes]:
        if not items:
            return dict(data)
        out = {}
        for it in items:
            if it["key"] in data:
                out[it.get("path") or it["key"]] = data[it["key"]]
            else:
                raise KeyError(f"key {it['key']!r} not found")
        return out

    def _downward_items(self, items: list) -> dict[str, bytes]:
        out = {}
        for it in items:
            if "fieldRef" in it:
                out[it["path"]] = self._field(it["fieldRef"]["fieldPath"]).encode()
            elif "resourceFieldRef" in it:
                out[it["path"]] = self._resource_field(it["resourceFieldRef"], None).encode()
        return out

    def _projected(self, proj: dict) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for src in proj.get("sources") or []:
            if "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                out[sat["path"]] = self._token(sat).encode()
            elif "configMap" in src or "secret" in src:
                kind = "configMap" if "configMap" in src else "secret"
                out.update(self._select_items(self._ref_data(kind, src[kind]), src[kind].get("items")))
            elif "downwardAPI" in src:
                out.update(self._downward_items(src["downwardAPI"].get("items") or []))
        return out

    def _token(self, sat: dict) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(sat.get("expirationSeconds", 3607)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid},
            },
        }
        if sat.get("audience"):
            body["spec"]["audiences"] = [sat["audience"]]
        resp = self.runner.core.create_namespaced_service_account_token(
            self.spec.get("serviceAccountName") or "default", self.ns, body, _preload_content=False)
        return json.loads(resp.data)["status"]["token"]

    def _pvc_dir(self, claim: str) -> Path:
        resp = self.runner.core.read_namespaced_persistent_volume_claim(claim, self.ns, _preload_content=False)
        pvc = json.loads(resp.data)
        vol = (pvc.get("spec") or {}).get("volumeName")
        if vol:
            pv = json.loads(self.runner.core.read_persistent_volume(vol, _preload_content=False).data)
            hp = (pv.get("spec") or {}).get("hostPath", {}).get("path") or (pv.get("spec") or {}).get("local", {}).get("path")
            if hp:
                d = Path(hp)
                d.mkdir(parents=True, exist_ok=True)
                return d
        d = self.runner.pvc_root / self.ns / claim
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- probes and status
    def _probe(self, c: Container, t: float) -> None:
        if not c.started:
            p = c.startup
            if p.spec is None:
                c.started = True
            elif t >= p.next_at:
                p.next_at = t + float(p.spec.get("periodSeconds", 10))
                if self._run_probe(c, p.spec):
                    c.started = True
                else:
                    p.failures += 1
                    if p.failures >= int(p.spec.get("failureThreshold", 3)):
                        self._restart_unhealthy(c, t, "startup probe failed")
                return
            else:
                return
            t0 = time.monotonic()
            for q in (c.readiness, c.liveness):
                q.reset(t0)
        r = c.readiness
        if r.spec is None:
            c.ready = True
        elif t >= r.next_at:
            r.next_at = t + float(r.spec.get("periodSeconds", 10))
            if self._run_probe(c, r.spec):
                r.successes, r.failures = r.successes + 1, 0
                if r.successes >= int(r.spec.get("successThreshold", 1)):
                    c.ready = True
            else:
                r.failures, r.successes = r.failures + 1, 0
                if r.failures >= int(r.spec.get("failureThreshold", 3)) or not c.ready:
                    c.ready = False
        lv = c.liveness
        if lv.spec is not None and t >= lv.next_at and c.kill_deadline is None:
            lv.next_at = t + float(lv.spec.get("periodSeconds", 10))
            if self._run_probe(c, lv.spec):
                lv.failures = 0
            else:
                lv.failures += 1
                if lv.failures >= int(lv.spec.get("failureThreshold", 3)):
                    self._restart_unhealthy(c, t, "liveness probe failed")

    def _restart_unhealthy(self, c: Container, t: float, why: str) -> None:
        log.info("pod %s/%s container %s: %s, killing", self.ns, self.pod_name, c.name, why)
        self._signal(c, signal.SIGTERM)
        c.kill_deadline = t + float(self._grace())
        c.ready = False

    def _port(self, c: Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port!r}")

    def _run_probe(self, c: Container, spec: dict) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                h = spec["httpGet"]
                scheme = h.get("scheme", "HTTP").lower()
                host = h.get("host") or POD_IP
                path = h.get("path", "/")
                if not path.startswith("/"):
                    path = "/" + path
                req = urllib.request.Request(f"{scheme}://{host}:{self._port(c, h['port'])}{path}")
                for hd in h.get("httpHeaders") or []:
                    req.add_header(hd["name"], hd["value"])
                ctx = ssl._create_unverified_context() if scheme == "https" else None
                try:
                    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                        return 200 <= resp.status < 400
                except urllib.error.HTTPError as e:
                    return 200 <= e.code < 400
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                with socket.create_connection((t.get("host") or POD_IP, self._port(c, t["port"])), timeout=timeout):
                    return True
            if "exec" in spec:
                argv = [c.pathmap(expand_vars(a, c.env)) for a in spec["exec"].get("command") or []]
                env = dict(self.runner.base_env)
                env.update(c.env)
                return subprocess.run(argv, env=env, cwd=c.cwd, capture_output=True,
                                      timeout=timeout).returncode == 0
            if "grpc" in spec:
                g = spec["grpc"]
                with socket.create_connection((POD_IP, int(g["port"])), timeout=timeout):
                    return True  # gRPC health protocol not spoken: a TCP connect stands in for it
        except Exception:
            return False
        return False

    def _set_condition(self, typ: str, status: bool, reason: str | None = None) -> None:
        s = "True" if status else "False"
        old = self.conditions.get(typ)
        if old and old["status"] == s:
            return
        cond = {"type": typ, "status": s, "lastTransitionTime": now(), "lastProbeTime": None}
        if reason and not status:
            cond["reason"] = reason
        self.conditions[typ] = cond

    def _update_ready(self) -> None:
        terminal = self.phase in ("Succeeded", "Failed")
        ready = not terminal and all(c.ready and c.running for c in self.containers)
        ready = ready and all(c.ready and c.running for c in self.init_containers if c.kind == "sidecar")
        reason = "PodCompleted" if terminal else "ContainersNotReady"
        self._set_condition("ContainersReady", ready, reason)
        gates_ok = True
        with self.lock:
            current = {c["type"]: c["status"] for c in (self.pod.get("status") or {}).get("conditions") or []}
        for g in self.spec.get("readinessGates") or []:
            gates_ok = gates_ok and current.get(g["conditionType"]) == "True"
        self._set_condition("Ready", ready and gates_ok, reason if not ready else "ReadinessGatesNotReady")

    def _send_status(self, force: bool = False) -> None:
        if self.gone.is_set():
            return
        status = {
            "phase": self.phase,
            "conditions": list(self.conditions.values()),
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        key = json.dumps(status, sort_keys=True)
        if key == self.last_sent and not force:
            return
        from kubernetes.client.rest import ApiException

        for attempt in range(5):
            try:
                self.runner.core.patch_namespaced_pod_status(self.pod_name, self.ns, {"status": status})
                self.last_sent = key
                return
            except ApiException as e:
                if e.status == 404:
                    self.gone.set()
                    return
                if attempt == 4:
                    log.warning("pod %s/%s status update failed: %s", self.ns, self.pod_name, e)
                time.sleep(0.2 * (attempt + 1))
            except Exception as e:  # connection errors during shutdown
                if attempt == 4:
                    log.warning("pod %s/%s status update failed: %s", self.ns, self.pod_name, e)
                time.sleep(0.2 * (attempt + 1))


# -- the runner (node + watch) ------------------------------------------------------------------

class Runner:
    def __init__(
        self,
        api_client,
        work_dir: str | os.PathLike,
        *,
        node_name: str = NODE_NAME,
        pvc_root: str | os.PathLike | None = None,
        venv_bin: str | os.PathLike | None = None,
        capacity: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        stop_grace: float = 5.0,
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
        self.labels = labels or {}
        self.stop_grace = stop_grace
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        venv_bin = Path(venv_bin) if venv_bin else Path(sys.executable).parent
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
        self.base_env = base

    # -- node
    def node_object(self) -> dict:
        conds = [
            ("Ready", "True", "KubeletReady", "local pod runner is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            ("NetworkUnavailable", "False", "RouteCreated", "ok"),
        ]
        t = now()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", RUNNER_LABEL: "true", "type": "local-runner", **self.labels,
                },
            },
            "spec": {"taints": [TAINT]},
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [{"type": a, "status": b, "reason": c, "message": d, "lastHeartbeatTime": t,
                                "lastTransitionTime": t} for a, b, c, d in conds],
                "addresses": [{"type": "InternalIP", "address": POD_IP}, {"type": "Hostname", "address": self.node_name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.34.3-local-runner",
                             "containerRuntimeVersion": "local://processes", "kernelVersion": os.uname().release,
                             "osImage": "local pod runner", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                             "bootID": ""},
                "phase": "Running",
            },
        }

    def register(self) -> None:
        from kubernetes.client.rest import ApiException

        node = self.node_object()
        try:
            self.core.create_node(node)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(self.node_name, {"metadata": {"labels": node["metadata"]["labels"]},
                                                  "spec": {"taints": [TAINT], "unschedulable": False}})
        self.heartbeat_status()
        self.renew_lease()

    def heartbeat_status(self) -> None:
        st = self.node_object()["status"]
        self.core.patch_node_status(self.node_name, {"status": {k: st[k] for k in
                                                                ("conditions", "capacity", "allocatable", "addresses",
                                                                 "nodeInfo", "daemonEndpoints")}})

    def renew_lease(self) -> None:
        from kubernetes.client.rest import ApiException

        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.coord.patch_namespaced_lease(self.node_name, "kube-node-lease", {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            node_uid = json.loads(self.core.read_node(self.node_name, _preload_content=False).data)["metadata"]["uid"]
            self.coord.create_namespaced_lease("kube-node-lease", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                                                  "uid": node_uid}]},
                "spec": spec,
            })

    def _heartbeat_loop(self) -> None:
        n = 0
        while not self.stopping.wait(10):
            n += 1
            try:
                self.renew_lease()
                if n % 3 == 0:
                    self.heartbeat_status()
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
        self.register()
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
        if delete_node:
            try:
                self.core.delete_node(self.node_name)
            except Exception:
                pass


# -- the fixture's handle on a runner subprocess ---------------------------------------------------

class LocalRunnerProcess:
    """A `python -m tests.harness.podrunner` subprocess for a Cluster (what the `local_runner`
    fixture yields). Attributes: node_name, work_dir, log_file, node_selector, tolerations."""

    node_selector = NODE_SELECTOR
    tolerations = TOLERATIONS

    def __init__(self, cluster, work_dir: Path, proc: subprocess.Popen, log_file: Path, node_name: str) -> None:
        self.cluster = cluster
        self.work_dir = work_dir
        self.proc = proc
        self.log_file = log_file
        self.node_name = node_name

    @classmethod
    def start(cls, cluster, work_dir: str | os.PathLike, *, node_name: str = NODE_NAME,
              timeout: float = 60) -> LocalRunnerProcess:
        from tests.harness.cluster import REPO, _set_pdeathsig, wait_nodes_ready

        work = Path(work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        log_file = Path(cluster.logs_dir) / "podrunner.log"
        cmd = [sys.executable, "-m", "tests.harness.podrunner", "--kubeconfig", cluster.kubeconfig,
               "--work-dir", str(work), "--node-name", node_name]
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
        runner = cls(cluster, work, proc, log_file, node_name)
        try:
            wait_nodes_ready(_ProcCheck(cluster, proc, log_file), [node_name], timeout=timeout)
        except BaseException:
            runner.stop()
            raise
        return runner

    def pod_dir(self, namespace: str, pod: str) -> Path:
        """The newest working directory of a pod (by name)."""
        dirs = sorted((self.work_dir / "pods").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
        if not dirs:
            raise FileNotFoundError(f"no local-runner directory for pod {namespace}/{pod}")
        return dirs[-1]

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output (stdout+stderr); `kubectl logs` does not work on this node."""
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


class _ProcCheck:
    """Adapter so wait_nodes_ready also notices a dead runner process."""

    def __init__(self, cluster, proc: subprocess.Popen, log_file: Path) -> None:
        self._c, self._p, self._log = cluster, proc, log_file

    def check_alive(self) -> None:
        self._c.check_alive() if hasattr(self._c, "check_alive") and not getattr(self._c, "external", False) else None
        if self._p.poll() is not None:
            raise RuntimeError(f"local pod runner exited with {self._p.returncode}:\n"
                               f"{self._log.read_text(errors='replace')[-4000:]}")

    def kubectl(self, *a, **kw):
        return self._c.kubectl(*a, **kw)

    def log_tail(self, lines: int = 40) -> str:
        return self._c.log_tail(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.harness.podrunner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--node-name", default=NODE_NAME)
    ap.add_argument("--pvc-root", default=None)
    ap.add_argument("--venv-bin", default=os.environ.get("FT_RUNNER_VENV_BIN"))
    ap.add_argument("--delete-node-on-exit", action="store_true")
    ap.add_argument("--stop-grace", type=float, default=5.0,
                    help="seconds between SIGTERM and SIGKILL for running pods when the runner stops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    from kubernetes import config

    api = config.new_client_from_config(config_file=args.kubeconfig)
    runner = Runner(api, args.work_dir, node_name=args.node_name, pvc_root=args.pvc_root, venv_bin=args.venv_bin,
                    stop_grace=args.stop_grace)

    def _stop(signum, frame):
        log.info("signal %s: stopping", signum)
        runner.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    t = threading.Thread(target=runner.run, name="watch", daemon=True)
    t.start()
    while not runner.stopping.wait(0.5):
        if not t.is_alive():
            log.error("runner thread died")
            return 1
    runner.stop(delete_node=args.delete_node_on_exit)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

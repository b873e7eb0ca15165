"""One container of a pod: its spec, its process, its state as the kubelet reports it, its probes,
and where its paths, working directory, log and termination message live on the host."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .paths import PathMap, expand_vars, safe_join


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

    def prepare(self, pod_dir: Path, volumes: dict[str, Path], env: dict[str, str]) -> None:
        """Map the mounts, termination message path and working directory to host paths; path-map `env`."""
        spec = self.spec
        self.env = env
        mapping: dict[str, str] = {}
        for m in spec.get("volumeMounts") or []:
            host = volumes[m["name"]]
            sub = m.get("subPath") or (expand_vars(m["subPathExpr"], self.env) if m.get("subPathExpr") else "")
            if sub:
                host = safe_join(host, sub)
                if not host.exists() and not m.get("readOnly"):
                    host.mkdir(parents=True, exist_ok=True)
            mapping[m["mountPath"]] = str(host)
        cdir = pod_dir / "containers" / self.name
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = PathMap(mapping)
        term = spec.get("terminationMessagePath") or "/dev/termination-log"
        mapped = tmp.host_path(term)
        if mapped is None:
            self.term_host = cdir / "termination-log"
            mapping[term] = str(self.term_host)
        else:
            self.term_host = Path(mapped)
        wd = spec.get("workingDir")
        if wd:
            mapped = tmp.host_path(wd)
            if mapped is None:
                host_wd = pod_dir / "rootfs" / wd.lstrip("/")
                mapping[wd] = str(host_wd)
                mapped = str(host_wd)
            Path(mapped).mkdir(parents=True, exist_ok=True)
            self.cwd = mapped
        else:
            self.cwd = str(cdir)
        self.pathmap = PathMap(mapping)
        self.env = {k: self.pathmap(v) for k, v in self.env.items()}
        self.log_path = pod_dir / f"{self.name}.log"

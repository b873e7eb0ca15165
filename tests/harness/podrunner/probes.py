"""Startup, readiness and liveness probes (httpGet, tcpSocket, exec; grpc as a TCP connect)."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from .container import Container
from .node import POD_IP
from .paths import expand_vars
from .processes import send_signal

log = logging.getLogger("podrunner")


def probe(c: Container, t: float, grace: float, base_env: dict[str, str], where: str) -> None:
    """Run whichever of a running container's probes are due at monotonic time `t`."""
    if not c.started:
        p = c.startup
        if p.spec is None:
            c.started = True
        elif t >= p.next_at:
            p.next_at = t + float(p.spec.get("periodSeconds", 10))
            if run_probe(c, p.spec, base_env):
                c.started = True
            else:
                p.failures += 1
                if p.failures >= int(p.spec.get("failureThreshold", 3)):
                    restart_unhealthy(c, t, grace, "startup probe failed", where)
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
        if run_probe(c, r.spec, base_env):
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
        if run_probe(c, lv.spec, base_env):
            lv.failures = 0
        else:
            lv.failures += 1
            if lv.failures >= int(lv.spec.get("failureThreshold", 3)):
                restart_unhealthy(c, t, grace, "liveness probe failed", where)


def restart_unhealthy(c: Container, t: float, grace: float, why: str, where: str) -> None:
    log.info("pod %s container %s: %s, killing", where, c.name, why)
    send_signal(c, signal.SIGTERM)
    c.kill_deadline = t + grace
    c.ready = False


def container_port(c: Container, port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in c.spec.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"unknown named port {port!r}")


def run_probe(c: Container, spec: dict, base_env: dict[str, str]) -> bool:
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            h = spec["httpGet"]
            scheme = h.get("scheme", "HTTP").lower()
            host = h.get("host") or POD_IP
            path = h.get("path", "/")
            if not path.startswith("/"):
                path = "/" + path
            req = urllib.request.Request(f"{scheme}://{host}:{container_port(c, h['port'])}{path}")
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
            with socket.create_connection((t.get("host") or POD_IP, container_port(c, t["port"])), timeout=timeout):
                return True
        if "exec" in spec:
            assert c.pathmap is not None
            argv = [c.pathmap(expand_vars(a, c.env)) for a in spec["exec"].get("command") or []]
            env = dict(base_env)
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

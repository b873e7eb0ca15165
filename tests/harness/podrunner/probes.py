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

from .container import Container, Probe
from .network import PodNetwork
from .paths import expand_vars
from .processes import send_signal

log = logging.getLogger("podrunner")


def probe(c: Container, t: float, grace: float, base_env: dict[str, str], network: PodNetwork, where: str) -> None:
    """Run whichever of a running container's probes are due at monotonic time `t`: httpGet, tcpSocket and grpc
    at the pod's address, exec inside the pod's namespaces (`network`)."""
    if not c.started:
        p = c.startup
        if p.spec is not None:
            result = run_if_due(c, p, t, base_env, network)
            if not result:
                if result is False and failed(p):
                    restart_unhealthy(c, t, grace, "startup probe failed", where)
                return
        c.started = True
        t0 = time.monotonic()
        for q in (c.readiness, c.liveness):
            q.reset(t0)
    r = c.readiness
    if r.spec is None:
        c.ready = True
    else:
        result = run_if_due(c, r, t, base_env, network)
        if result:
            r.successes, r.failures = r.successes + 1, 0
            if r.successes >= int(r.spec.get("successThreshold", 1)):
                c.ready = True
        elif result is False:
            r.successes = 0
            if failed(r):
                c.ready = False
    lv = c.liveness
    if c.kill_deadline is None:
        result = run_if_due(c, lv, t, base_env, network)
        if result:
            lv.failures = 0
        elif result is False and failed(lv):
            restart_unhealthy(c, t, grace, "liveness probe failed", where)


def run_if_due(c: Container, p: Probe, t: float, base_env: dict[str, str], network: PodNetwork) -> bool | None:
    """The probe's result if it is due at `t` (scheduling the next run), None if it is unset or not due."""
    if p.spec is None or t < p.next_at:
        return None
    p.next_at = t + float(p.spec.get("periodSeconds", 10))
    return run_probe(c, p.spec, base_env, network)


def failed(p: Probe) -> bool:
    """Count one failure; True once the probe's failureThreshold is reached."""
    p.failures += 1
    return p.failures >= int((p.spec or {}).get("failureThreshold", 3))


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


def run_probe(c: Container, spec: dict, base_env: dict[str, str], network: PodNetwork) -> bool:
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            h = spec["httpGet"]
            scheme = h.get("scheme", "HTTP").lower()
            host = h.get("host") or network.ip
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
            with socket.create_connection((t.get("host") or network.ip, container_port(c, t["port"])), timeout=timeout):
                return True
        if "exec" in spec:
            assert c.pathmap is not None
            argv = [c.pathmap(expand_vars(a, c.env)) for a in spec["exec"].get("command") or []]
            env = dict(base_env)
            env.update(c.env)
            return subprocess.run(network.sandbox_argv(argv), env=env, cwd=c.cwd, capture_output=True,
                                  timeout=timeout).returncode == 0
        if "grpc" in spec:
            g = spec["grpc"]
            with socket.create_connection((network.ip, int(g["port"])), timeout=timeout):
                return True  # gRPC health protocol not spoken: a TCP connect stands in for it
    except Exception:
        return False
    return False

"""Container processes: each container's command+args (an exec list, never a shell) runs as its own
process group with stdout and stderr in its log; stopping is SIGTERM to the container's own process (as a
container runtime signals PID 1 only), then SIGKILL to the whole group after the grace."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time

from .clock import now
from .container import Container, restart_backoff
from .logs import TERMINATION_MESSAGE_LIMIT, open_run_log, termination_message
from .network import PodNetwork
from .paths import expand_vars

log = logging.getLogger("podrunner")


def start(c: Container, base_env: dict[str, str], network: PodNetwork, restart_policy: str, where: str) -> None:
    """Start a prepared container in the pod's namespaces (`network`); a start that fails is reported like
    the kubelet's StartError."""
    assert c.pathmap is not None and c.log_path is not None
    spec = c.spec
    argv = [expand_vars(a, c.env) for a in (spec.get("command") or []) + (spec.get("args") or [])]
    argv = [c.pathmap(a) for a in argv]
    if c.term_host is not None:
        c.term_host.parent.mkdir(parents=True, exist_ok=True)
        c.term_host.write_bytes(b"")
    c.started_at = now()
    c.next_restart = 0.0
    if not argv:
        fail_start(c, "the local runner needs an explicit command (it has no image entrypoint)", restart_policy, where)
        return
    env = dict(base_env)
    env.update(c.env)
    env["HOSTNAME"] = network.hostname
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        fail_start(c, f"executable file not found in $PATH (argv[0]={argv[0]!r})", restart_policy, where)
        return
    with open_run_log(c) as logf:
        try:
            c.proc = subprocess.Popen(
                network.sandbox_argv(argv), env=env, cwd=c.cwd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            fail_start(c, f"{type(e).__name__}: {e} (argv[0]={argv[0]!r})", restart_policy, where)
            return
    log.info("pod %s container %s started pid %s: %s", where, c.name, c.proc.pid, argv)
    c.state = {"running": {"startedAt": c.started_at}}
    t = time.monotonic()
    for p in (c.startup, c.readiness, c.liveness):
        p.reset(t)
    c.started = c.startup.spec is None
    c.ready = False


def fail_start(c: Container, message: str, restart_policy: str, where: str) -> None:
    log.warning("pod %s container %s: %s", where, c.name, message)
    c.proc = None
    c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message[:TERMINATION_MESSAGE_LIMIT],
                              "startedAt": c.started_at, "finishedAt": now()}}
    if restart_policy == "Never" and c.kind != "sidecar":
        c.done = True
    else:
        c.last_state = {"terminated": c.state["terminated"]}
        c.restart_count += 1
        c.next_restart = time.monotonic() + restart_backoff(c.restart_count)
        c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message[:1000]}}


def record_exit(c: Container, rc: int, where: str) -> None:
    """The container's terminated state from its exit status (a signal -N becomes 128+N, as in a shell)."""
    code = rc if rc >= 0 else 128 + (-rc)
    reason = "Completed" if code == 0 else "Error"
    message = termination_message(c, code)
    term = {"exitCode": code, "reason": reason, "startedAt": c.started_at or now(), "finishedAt": now(),
            "containerID": f"local://{c.proc.pid}" if c.proc else ""}
    if message:
        term["message"] = message
    c.state = {"terminated": term}
    c.ready = False
    c.started = False
    log.info("pod %s container %s exited %s", where, c.name, code)


def send_signal(c: Container, sig: int) -> None:
    """SIGKILL ends the container's whole process group (the runtime kills its cgroup); any other signal
    goes to the container's own process only, as a runtime sends it to PID 1: its children hear of it
    from that process (vLLM's API server drains through its engine; torchrun forwards to its workers),
    and a child signalled directly would die under its parent mid-drain."""
    if c.proc is not None and c.proc.poll() is None:
        try:
            if sig == signal.SIGKILL:
                os.killpg(c.proc.pid, sig)
            else:
                os.kill(c.proc.pid, sig)
        except ProcessLookupError:
            pass


def stop(targets: list[Container], grace: float, gone: threading.Event, where: str) -> None:
    """SIGTERM every running target, SIGKILL what is left after `grace` (at once when the pod is gone)."""
    targets = [c for c in targets if c.proc is not None]
    for c in targets:
        send_signal(c, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, grace)
    while any(c.proc is not None and c.proc.poll() is None for c in targets) and time.monotonic() < deadline:
        if gone.is_set():
            break
        time.sleep(0.05)
    for c in targets:
        send_signal(c, signal.SIGKILL)
    for c in targets:
        assert c.proc is not None
        try:
            rc = c.proc.wait(10)
        except subprocess.TimeoutExpired:
            rc = -9
        record_exit(c, rc, where)
        c.proc = None
        c.done = True

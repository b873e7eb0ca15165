"""A `python` grader cannot reach the network, whatever it tries (`_socket`, `ctypes` straight to libc,
a subprocess), when it runs with what a job pod has: no capabilities at all and `no_new_privs` (the pods
drop ALL capabilities; their RuntimeDefault seccomp profile allows installing a filter, as no_new_privs
processes may). Under those privileges `unshare -n`, the old sandbox, fails: the test checks that too, so
it proves the sandbox does not depend on it.

The graders run in a child `python` started through `setpriv` (util-linux) with an empty capability
bounding set; a TCP listener in this process records every connection it accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[4]
SETPRIV = shutil.which("setpriv")
NO_CAPABILITIES = [SETPRIV or "setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]

# Each grader returns 1.0 only when it got a connection to the listener at {port}.
ATTEMPTS = {
    "raw-socket": """
        import _socket
        def grade(output, item):
            s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
            s.connect(("127.0.0.1", {port}))
            s.send(output.encode())
            return 1.0
    """,
    "ctypes": """
        import ctypes, struct
        libc = ctypes.CDLL(None, use_errno=True)
        def grade(output, item):
            fd = libc.socket(2, 1, 0)
            if fd < 0:
                raise PermissionError(f"socket() failed, errno {{ctypes.get_errno()}}")
            addr = struct.pack("=HH4s8x", 2, __import__("socket").htons({port}), bytes([127, 0, 0, 1]))
            if libc.connect(fd, addr, len(addr)) != 0:
                raise PermissionError(f"connect() failed, errno {{ctypes.get_errno()}}")
            return 1.0
    """,
    "subprocess": """
        import subprocess, sys
        def grade(output, item):
            code = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')"
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
            if done.returncode != 0:
                raise PermissionError(done.stderr.strip().splitlines()[-1])
            return 1.0
    """,
}

# Run in the unprivileged child: every attempt through the public grader API, results as JSON.
RUNNER = """
import json, sys
from finetune_api.job import Grader
from finetune_trainer.evaluation.graders import build_grader
results = {}
for name, source in json.loads(sys.argv[1]).items():
    g = build_grader(Grader(name=name, type="python", source=source, timeout_seconds=20), [])
    try:
        r = g("an eval row", {})
    finally:
        g.close()
    results[name] = {"score": r.score, "error": r.error}
print(json.dumps(results))
"""


class Listener:
    """A TCP listener on 127.0.0.1 that counts accepted connections."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.server.close()


def unprivileged(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "trainer")), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*NO_CAPABILITIES, *argv], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(SETPRIV is None or sys.platform != "linux", reason="needs Linux and util-linux's setpriv")
def test_a_grader_without_capabilities_cannot_reach_a_listener() -> None:
    listener = Listener()
    try:
        # The listener is reachable from outside the sandbox, by the same unprivileged user...
        probe = unprivileged(sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {listener.port}))")
        assert probe.returncode == 0, probe.stderr
        assert _wait(lambda: listener.accepted == 1)
        # ...which cannot use the old sandbox...
        assert unprivileged("unshare", "-n", "true").returncode != 0
        # ...and whose graders cannot reach it by any route.
        sources = {name: textwrap.dedent(code).format(port=listener.port) for name, code in ATTEMPTS.items()}
        done = unprivileged(sys.executable, "-c", RUNNER, json.dumps(sources))
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout)
    finally:
        listener.close()
    assert listener.accepted == 1, "a grader reached the listener"
    for name, result in results.items():
        assert result["score"] == 0.0, (name, result)
        assert "Operation not permitted" in result["error"] or "errno 1" in result["error"], (name, result)


def _wait(condition, timeout: float = 10) -> bool:
    """The listener thread counts asynchronously: wait for the count, bounded."""
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return True
        event.wait(0.05)
    return condition()

"""The kubelet's container-log endpoint, so `kubectl logs` and every API client of `pods/log` (the
operator's progress reader) work on the runner's pods through the real kube-apiserver.

The apiserver proxies `GET /api/v1/namespaces/NS/pods/POD/log` to
`https://<node address>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/NS/POD/CONTAINER`
with the query `follow`, `previous`, `tailLines`, `limitBytes` (and `timestamps`, `sinceSeconds`,
`sinceTime`, which this runner cannot answer: it keeps no per-line times, so it refuses them with a clear
message instead of ignoring them). The test control plane starts the apiserver without
`--kubelet-certificate-authority`, so the apiserver does not verify the kubelet's serving certificate
(pkg/kubelet/client: no CA means an insecure transport); a self-signed one made at start is enough. Nor
does it present a client certificate (no `--kubelet-client-certificate`), so this endpoint cannot
authenticate its caller: it listens only on the node's own address, and serves logs only (no exec,
attach or port-forward). Errors are plain text with the kubelet's status codes, which the apiserver
passes on to the client.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import logging
import re
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .container import Container
from .logs import run_offsets

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("podrunner")

FOLLOW_POLL_SECONDS = 0.2
UNSUPPORTED = ("timestamps", "sinceSeconds", "sinceTime")
_PATH = re.compile(r"^/containerLogs/([^/]+)/([^/]+)/([^/]+)$")


class LogRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def self_signed_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """A serving certificate for the node's address (the apiserver does not verify it, see above)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local-runner-kubelet")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "kubelet.crt", directory / "kubelet.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class ContainerLog:
    """One container's log as the kubelet serves it: the byte range of the current (or previous) run."""

    def __init__(self, path: Path, container: Container | None) -> None:
        self.path = path
        self.container = container  # None once the pod's worker has finished: nothing runs any more

    def run_range(self, previous: bool, pod: str) -> tuple[int, int | None]:
        """(start, end) of the run's bytes in the log; end None for the current run (it may still grow)."""
        offsets = run_offsets(self.path)
        name = self.path.name.removesuffix(".log")
        if previous:
            if len(offsets) < 2:
                raise LogRequestError(400, f'previous terminated container "{name}" in pod "{pod}" not found')
            return offsets[-2], offsets[-1]
        if not offsets:
            raise LogRequestError(400, f'container "{name}" in pod "{pod}" is waiting to start: ContainerCreating')
        return offsets[-1], None

    def running(self, runs: int) -> bool:
        """Whether the run we follow (the `runs`-th) is still going."""
        c = self.container
        return c is not None and c.running and len(run_offsets(self.path)) == runs


class LogServer:
    """HTTPS on the node's address; `port` is what the node reports in `daemonEndpoints.kubeletEndpoint`."""

    def __init__(self, runner: Runner, address: str) -> None:
        self.runner = runner
        self.address = address
        handler = type("Handler", (_Handler,), {"logs": self})
        self.httpd = http.server.ThreadingHTTPServer((address, 0), handler)
        self.httpd.daemon_threads = True
        cert, key = self_signed_certificate(runner.work_dir / "kubelet", address)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kubelet-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("kubelet log endpoint on https://%s:%s", self.address, self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog:
        """The log of the pod's newest incarnation (a re-created pod of the same name is a new directory)."""
        with self.runner.lock:
            worker = next((w for w in self.runner.workers.values() if (w.ns, w.pod_name) == (namespace, pod)), None)
        if worker is not None:
            live = next((c for c in worker.init_containers + worker.containers if c.name == container), None)
            return ContainerLog(worker.dir / f"{container}.log", live)
        dirs = sorted((self.runner.work_dir / "pods").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
        if not dirs:
            raise LogRequestError(404, f'pod "{pod}" in namespace "{namespace}" is not on this node')
        return ContainerLog(dirs[-1] / f"{container}.log", None)


class _Handler(http.server.BaseHTTPRequestHandler):
    logs: LogServer
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: right for a followed stream

    def log_message(self, format: str, *args: object) -> None:
        log.debug("kubelet-logs %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        url = urlsplit(self.path)
        match = _PATH.match(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if match is None:
                raise LogRequestError(404, f"{url.path}: the local pod runner serves /containerLogs only")
            if refused := [k for k in UNSUPPORTED if k in query]:
                raise LogRequestError(400, f"the local pod runner keeps no log timestamps: {', '.join(refused)} "
                                           "is not supported")
            tail = _int(query, "tailLines")
            limit = _int(query, "limitBytes")
            source = self.logs.container_log(*match.groups())
            start, end = source.run_range(query.get("previous") == "true", match.group(2))
            runs = len(run_offsets(source.path))
        except LogRequestError as e:
            self._error(e.status, str(e))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent, position = self._send_range(source.path, start, end, tail, limit)
        if query.get("follow") == "true" and end is None:
            self._follow(source, position, runs, None if limit is None else limit - sent)

    def _send_range(self, path: Path, start: int, end: int | None, tail: int | None,
                    limit: int | None) -> tuple[int, int]:
        """Send the run's bytes (its last `tail` lines, at most `limit` bytes); return (sent, end offset)."""
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        position = start + len(data)
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None:
            data = data[:limit]
        self.wfile.write(data)
        self.wfile.flush()
        return len(data), position

    def _follow(self, source: ContainerLog, position: int, runs: int, budget: int | None) -> None:
        """Stream what the run appends until it ends (or the client goes, or the byte limit is reached)."""
        try:
            with open(source.path, "rb") as f:
                f.seek(position)
                while budget is None or budget > 0:
                    alive = source.running(runs)
                    chunk = f.read(65536 if budget is None else min(65536, budget))
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        budget = None if budget is None else budget - len(chunk)
                    elif not alive or self.logs.runner.stopping.is_set():
                        return
                    else:
                        time.sleep(FOLLOW_POLL_SECONDS)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return  # the client stopped following

    def _error(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _int(query: dict[str, str], key: str) -> int | None:
    if key not in query:
        return None
    try:
        return int(query[key])
    except ValueError:
        raise LogRequestError(400, f"{key}={query[key]!r} is not an integer") from None

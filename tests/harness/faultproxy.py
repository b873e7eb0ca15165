"""A fault-injecting TLS proxy in front of the test control plane's kube-apiserver (DESIGN.md §9
"Fault injection").

The operator's kubeconfig points here; every request is forwarded over TLS to the real apiserver,
unless a `FaultRule` matches it (method, path regex, a count and/or a seeded probability): then the
proxy answers with that status and a `metav1.Status` body, as the apiserver would. `after_forward`
rules let the request through first and replace the answer (a create that succeeded but whose
response was lost: the retry meets a 409 for its own object).

One request per connection (the proxy sends `Connection: close` upstream), so every request is seen,
watches included (they stream until either side closes).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import random
import re
import socket
import socketserver
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tests.harness.operator import free_port

REASONS = {403: "Forbidden", 409: "AlreadyExists", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}
PHRASES = {403: "Forbidden", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class FaultRule:
    """Answer matching requests with `status` (`count` times at most; each with `probability`)."""

    method: str
    path: str
    status: int
    count: int | None = None
    probability: float = 1.0
    after_forward: bool = False
    injected: int = 0

    def matches(self, method: str, path: str) -> bool:
        return re.fullmatch(self.method, method) is not None and re.search(self.path, path) is not None


@dataclass
class Seen:
    """One request through the proxy and what it got."""

    method: str
    path: str
    status: int | None
    injected: bool


@dataclass
class FaultProxy:
    """Start with `start(admin_kubeconfig_for_upstream_ca)`, then `kubeconfig_for(sa_kubeconfig, path)`."""

    upstream: str
    upstream_ca: str
    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._sockets: set[socket.socket] = set()
        self._dir = Path(tempfile.mkdtemp(prefix="faultproxy-"))
        self.cert_pem = _self_signed(self._dir)
        self._server: socketserver.ThreadingTCPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(self._dir / "cert.pem", self._dir / "key.pem")
        upstream_ctx = ssl.create_default_context(cadata=self.upstream_ca)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request, server_ctx, upstream_ctx)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def kubeconfig_for(self, kubeconfig: str, path: Path) -> str:
        """`kubeconfig` (e.g. the operator's ServiceAccount one) with its server replaced by this proxy."""
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        for cluster in cfg["clusters"]:
            cluster["cluster"] = {"server": f"https://127.0.0.1:{self.port}",
                                  "certificate-authority-data": base64.b64encode(self.cert_pem).decode()}
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return str(path)

    def injected(self, method: str | None = None, path: str = "") -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.injected and (method is None or s.method == method) and path in s.path)

    # -- one connection, one request -------------------------------------------------------------------
    def _fault_for(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if not rule.matches(method, path) or (rule.count is not None and rule.injected >= rule.count):
                    continue
                if self._rng.random() < rule.probability:
                    rule.injected += 1
                    return rule
        return None

    def _serve(self, raw: socket.socket, server_ctx: ssl.SSLContext, upstream_ctx: ssl.SSLContext) -> None:
        try:
            client = server_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self._track(client)
        upstream = None
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [line for line in lines[1:] if line and not line.lower().startswith(("connection:", "keep-alive:"))]
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            body = rest
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    break
                body += chunk
            path = urlsplit(target).path
            rule = self._fault_for(method, path)
            if rule is not None and not rule.after_forward:
                self._record(method, path, rule.status, True)
                client.sendall(_status_response(rule.status, method, path))
                return
            host = urlsplit(self.upstream)
            upstream = upstream_ctx.wrap_socket(socket.create_connection((host.hostname, host.port), timeout=30),
                                                server_hostname=host.hostname)
            upstream.settimeout(None)
            self._track(upstream)
            request = "\r\n".join([lines[0], *headers, "Connection: close", "", ""]).encode("latin-1") + body
            upstream.sendall(request)
            if rule is not None:
                _drain(upstream)
                self._record(method, path, rule.status, True)
                client.sendall(_status_response(rule.status, method, path))
                return
            first = upstream.recv(65536)
            status = int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/") else None
            self._record(method, path, status, False)
            while first:
                client.sendall(first)
                first = upstream.recv(65536)
        except (OSError, ValueError, IndexError):
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)
                    _close(sock)

    def _record(self, method: str, path: str, status: int | None, injected: bool) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, status, injected))

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


def start_fault_proxy(cluster, seed: int = 0) -> FaultProxy:
    """A proxy in front of `cluster`'s apiserver (its server and CA from the admin kubeconfig)."""
    cfg = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    entry = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    if "certificate-authority-data" in entry:
        ca = base64.b64decode(entry["certificate-authority-data"]).decode()
    else:
        ca = Path(entry["certificate-authority"]).read_text()
    return FaultProxy(entry["server"], ca, seed=seed).start()


# -- plumbing ---------------------------------------------------------------------------------------------

def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 1 << 20:
            return None, b""
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _drain(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def _status_response(status: int, method: str, path: str) -> bytes:
    body = json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": status,
        "reason": REASONS.get(status, "InternalError"),
        "message": f"injected by the test fault proxy: {method} {path} -> {status}",
    }).encode()
    extra = "Retry-After: 1\r\n" if status == 429 else ""
    head = (f"HTTP/1.1 {status} {PHRASES.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _self_signed(directory: Path) -> bytes:
    """A self-signed certificate for 127.0.0.1 (its own CA in the operator's kubeconfig)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ft-fault-proxy")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem

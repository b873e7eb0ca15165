"""A real S3-compatible object store for the tests: SeaweedFS's `weed server` (built from Go modules by
scripts/build-controlplane.sh into .cache/bin), with a private bucket that needs credentials.

Access is by identity (`-s3.config`): `admin` may do anything (the tests seed buckets with it), `reader`
may read and list the buckets it is given (what a job's Secret holds), and anonymous callers nothing.
The bytes the store sends per bucket come from its own Prometheus counter
(`SeaweedFS_s3_bucket_traffic_sent_bytes_total`), so a test counts what the store served, not what a
client says it read.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.cluster import BIN_DIR, _set_pdeathsig, wait_for
from tests.harness.processes import port_free

WEED = BIN_DIR / "weed"
SENT_BYTES = "SeaweedFS_s3_bucket_traffic_sent_bytes_total"


def _ports(count: int) -> list[int]:
    """Free ports whose gRPC companions (port + 10000, SeaweedFS's convention) are free too."""
    from finetune_api.contract.launch import free_port

    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 65536 and port_free(port + 10000) and port not in ports:
            ports.append(port)
    return ports


@dataclass
class Credentials:
    access_key_id: str
    secret_access_key: str

    def env(self, endpoint: str) -> dict[str, str]:
        """The keys of a source's Secret (contract.sources.CREDENTIAL_KEYS)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}


@dataclass
class ObjectStore:
    """A running `weed server` with S3 on `endpoint`, bound to `address` only (for pods of the local runner:
    its `host_address`, the node's address on the pod bridge)."""

    workdir: Path
    buckets: tuple[str, ...]
    address: str = "127.0.0.1"
    admin: Credentials = field(default_factory=lambda: Credentials("admin", secrets.token_hex(16)))
    reader: Credentials = field(default_factory=lambda: Credentials("reader", secrets.token_hex(16)))
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> ObjectStore:
        master, volume, filer, s3, metrics = _ports(5)
        self.endpoint = f"http://{self.address}:{s3}"
        self.master = f"{self.address}:{master}"
        self.metrics_url = f"http://{self.address}:{metrics}/metrics"
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        readable = [f"{action}:{bucket}" for bucket in self.buckets for action in ("Read", "List")]
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.admin.access_key_id, "secretKey": self.admin.secret_access_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": self.reader.access_key_id, "secretKey": self.reader.secret_access_key}],
             "actions": readable},
        ]}))
        self.log = self.workdir / "weed.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(WEED), "server", f"-dir={data}", f"-ip={self.address}", f"-ip.bind={self.address}",
                 f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                 "-master.volumeSizeLimitMB=64", "-volume.max=16", "-s3", f"-s3.port={s3}",
                 f"-s3.config={config}", f"-metricsPort={metrics}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig,
            )
        for bucket in self.buckets:
            wait_for(lambda b=bucket: self._create_bucket(b), timeout=timeout, interval=0.5,
                     what=f"SeaweedFS to create bucket {bucket} (log: {self.log})")
        return self

    def _create_bucket(self, bucket: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"weed exited {self.proc.returncode}; log: {self.log}")
        out = subprocess.run([str(WEED), "shell", f"-master={self.master}"], input=f"s3.bucket.create -name {bucket}\n",
                             capture_output=True, text=True, timeout=60)
        listed = subprocess.run([str(WEED), "shell", f"-master={self.master}"], input="s3.bucket.list\n",
                                capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and bucket in listed.stdout

    def store(self, bucket: str) -> Any:
        """An obstore client for `bucket` as admin (seeding data)."""
        from obstore.store import S3Store

        return S3Store(bucket, config={"endpoint": self.endpoint, "access_key_id": self.admin.access_key_id,
                                       "secret_access_key": self.admin.secret_access_key, "region": "us-east-1"},
                       client_options={"allow_http": True})

    def put_tree(self, bucket: str, prefix: str, root: Path) -> int:
        """Upload every file under `root` to `bucket/prefix/…`; returns the bytes uploaded."""
        import obstore

        store, total = self.store(bucket), 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            obstore.put(store, f"{prefix}/{path.relative_to(root).as_posix()}", data)
            total += len(data)
        return total

    def sent_bytes(self, bucket: str) -> float:
        """Bytes the store's S3 gateway has sent from `bucket` (its own counter; 0 before any read)."""
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        match = re.search(rf'^{SENT_BYTES}\{{[^}}]*bucket="{re.escape(bucket)}"[^}}]*\}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # weed's graceful stop waits ~25 s (its raft and filer shutdown); the store's data is the
            # test's throwaway directory, so a short grace then SIGKILL loses nothing.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

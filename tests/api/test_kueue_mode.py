"""Kueue mode against a real Kueue controller (issue 9): a ClusterQueue with 2 GPUs admits one 2-GPU
FineTuneJob and holds the next until the first one's training finishes; the first one's GPU evaluation
then waits in Kueue too.

Kueue's manager (`.cache/bin/kueue`, built from its Go module by scripts/build-controlplane.sh) runs as a
local process against the test control plane's admin kubeconfig, with the CRDs of the same module. No
webhook configuration is registered with the API server (the operator creates the training Job suspended
and labelled itself), and the Workload CRD has no conversion webhook, so Kueue writes and serves its
storage version. With `internalCertManagement` off Kueue reads its metrics certificate from the fixed path
/etc/kueue/metrics/certs; the fixture gives it one through an overlay on /etc in a private mount namespace
(`unshare`), so nothing is written to the host's /etc.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.cluster import BIN_DIR, CACHE_DIR, REPO, _set_pdeathsig, apply_crds, missing_binaries
from tests.harness.summaries import PREPARED, TRAINED
from tests.harness.operator import (
    Operator,
    PodDriver,
    free_port,
    get,
    setup_namespace,
    status,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.api

KUEUE_VERSION = re.search(r"^KUEUE_VERSION=(\S+)", (REPO / "scripts" / "build-controlplane.sh").read_text(),
                          re.M).group(1)
KUEUE_BIN = BIN_DIR / "kueue"
KUEUE_MODULE = CACHE_DIR / "go" / "pkg" / "mod" / "sigs.k8s.io" / f"kueue@{KUEUE_VERSION}"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
METRICS_CERTS = Path("/etc/kueue/metrics/certs")  # fixed in cmd/kueue/main.go when internal certs are off


def self_signed(directory: Path) -> None:
    """tls.crt / tls.key for 127.0.0.1 (Kueue's webhook and metrics servers; no client ever checks it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))


def kueue_config(work: Path, health_port: int) -> Path:
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "manageJobsWithoutQueueName": False,
        "internalCertManagement": {"enable": False},
        "leaderElection": {"leaderElect": False},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
        "webhook": {"host": "127.0.0.1", "port": free_port(), "certDir": str(work / "webhook-certs")},
        "integrations": {"frameworks": ["batch/job"]},
        # the visibility API server wants an APIService and the aggregation layer; not needed here
        "featureGates": {"VisibilityOnDemand": False},
    }
    self_signed(work / "webhook-certs")
    path = work / "kueue-config.yaml"
    path.write_text(json.dumps(config))
    return path


def kueue_command(work: Path, args: list[str]) -> list[str]:
    """`kueue args`, in a mount namespace whose /etc has kueue/metrics/certs (unless the host has it)."""
    if (METRICS_CERTS / "tls.crt").exists():
        return args
    upper, scratch = work / "etc-upper", work / "etc-work"
    self_signed(upper / "kueue" / "metrics" / "certs")
    scratch.mkdir()
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    options = shlex.quote(f"lowerdir=/etc,upperdir={upper},workdir={scratch}")
    return [*unshare, "sh", "-c", f'mount -t overlay overlay -o {options} /etc && exec "$@"', "kueue", *args]


@pytest.fixture
def kueue(cluster, tmp_path):
    """Kueue's CRDs applied (they stay for the session) and its manager running for one test."""
    if cluster.external:
        pytest.skip("starts its own Kueue manager: not on an existing cluster (FT_USE_EXISTING_CLUSTER=1)")
    if missing_binaries(["kueue"]):
        if os.environ.get("FT_SKIP_BUILD") == "1":
            pytest.skip(f"{KUEUE_BIN} is not built and FT_SKIP_BUILD=1: run scripts/build-controlplane.sh")
        pytest.fail(f"{KUEUE_BIN} is missing although scripts/build-controlplane.sh ran")
    if not (KUEUE_MODULE / "config").is_dir():
        pytest.fail(f"Kueue's CRDs are not in the Go module cache ({KUEUE_MODULE}); "
                    "run scripts/build-controlplane.sh --force")
    apply_crds(cluster, KUEUE_MODULE / "config" / "components" / "crd" / "bases", timeout=120)
    cluster.kubectl("create", "namespace", "kueue-system", check=False)
    health = free_port()
    log_path = tmp_path / "kueue.log"
    args = [str(KUEUE_BIN), f"--config={kueue_config(tmp_path, health)}",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--visibility-server-port={free_port()}", "--zap-log-level=info"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(kueue_command(tmp_path, args), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig, cwd=tmp_path)

    def tail(lines: int = 40) -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Kueue not ready after {timeout}s:\n{tail()}")
            time.sleep(0.5)
        raise AssertionError(f"kueue exited {proc.returncode}:\n{tail()}")

    proc.log_tail = tail  # type: ignore[attr-defined]
    try:
        wait_ready()
        yield proc
    finally:
        cluster.kubectl("delete", "clusterqueues,resourceflavors", "-l", "finetune.dev/test-ns",
                        "--wait=false", check=False)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def kueue_objects(namespace: str, cluster_queue: str, gpus: int) -> list[dict]:
    meta = {"name": cluster_queue, "labels": {"finetune.dev/test-ns": namespace}}
    # ephemeral-storage too: every child requests its scratch, and Kueue admits only covered resources.
    quota = [{"name": "cpu", "nominalQuota": "256"}, {"name": "memory", "nominalQuota": "2Ti"},
             {"name": "ephemeral-storage", "nominalQuota": "10Ti"},
             {"name": "nvidia.com/gpu", "nominalQuota": str(gpus)}]
    return [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": meta},
        {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": meta,
         "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                  "queueingStrategy": "BestEffortFIFO",
                  "resourceGroups": [{"coveredResources": [q["name"] for q in quota],
                                      "flavors": [{"name": cluster_queue, "resources": quota}]}]}},
        {"apiVersion": KUEUE_API, "kind": "LocalQueue", "metadata": {"name": "gpus", "namespace": namespace},
         "spec": {"clusterQueue": cluster_queue}},
    ]


def finetunejob(name: str, namespace: str) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"},
                     "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
                     "resources": {"nodes": 1, "gpusPerNode": 2},
                     "queue": {"name": "gpus"},
                     "retry": {"maxAttempts": 1, "backoffSeconds": 0}}}


def workload_of(cluster, namespace: str, job: str) -> dict | None:
    out = cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json")
    return next((w for w in json.loads(out.stdout)["items"]
                 if any(o.get("kind") == "Job" and o.get("name") == job
                        for o in w["metadata"].get("ownerReferences") or [])), None)


def conditions(obj: dict | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def suspended(cluster, namespace: str, job: str) -> bool | None:
    obj = get(cluster, namespace, "job", job)
    return None if obj is None else bool(obj["spec"].get("suspend"))


def test_cluster_queue_of_2_gpus_admits_one_2_gpu_job_and_holds_the_next(
        cluster, kueue, namespace, operator_kubeconfig, tmp_path):
    setup_namespace(cluster, namespace)
    cluster_queue = f"ft-{namespace}"[:63]
    cluster.apply(kueue_objects(namespace, cluster_queue, gpus=2))
    wait_for("the ClusterQueue Active", lambda: conditions(json.loads(cluster.kubectl(
        "get", "clusterqueue", cluster_queue, "-o", "json").stdout)).get("Active") == "True", timeout=60)

    op = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="kueue").start()
    pods = PodDriver(cluster, namespace)
    pods.on("prepare", 0, PREPARED)
    pods.on("train", 0, TRAINED, delay="1h", job="first-train-a0")    # runs until the test ends it
    pods.on("train", 0, TRAINED, delay="1h", job="second-train-a0")
    t0 = time.monotonic()
    try:
        cluster.apply(finetunejob("first", namespace))
        first = wait_phase(cluster, namespace, "first", "Training", timeout=180)
        assert first["queue"]["admitted"] is True and first["queue"]["name"] == "gpus", first["queue"]
        assert suspended(cluster, namespace, "first-train-a0") is False
        wl_first = workload_of(cluster, namespace, "first-train-a0")
        assert conditions(wl_first).get("Admitted") == "True", wl_first
        assert wl_first["status"]["admission"]["clusterQueue"] == cluster_queue

        cluster.apply(finetunejob("second", namespace))
        wait_phase(cluster, namespace, "second", "Queued", timeout=120)
        held = wait_for("the second Workload pending, mirrored into status.queue", lambda: (
            conditions(workload_of(cluster, namespace, "second-train-a0")).get("QuotaReserved") == "False"
            and (s := status(cluster, namespace, "second")).get("queue", {}).get("message") and s),
                        timeout=120)
        assert held["phase"] == "Queued" and held["queue"]["admitted"] is False, held["queue"]
        assert "nvidia.com/gpu" in held["queue"]["message"], held["queue"]
        assert {c["type"]: c["status"] for c in held["conditions"]}["Admitted"] == "False"
        time.sleep(5)  # several Kueue admission cycles: still held while the first job trains
        assert suspended(cluster, namespace, "second-train-a0") is True
        assert status(cluster, namespace, "second")["phase"] == "Queued"
        assert status(cluster, namespace, "first")["phase"] == "Training"

        # the first job's trainer exits 0: its Workload finishes and frees the 2 GPUs
        pod = wait_for("the first training pod annotated", lambda: next(
            (p for p in json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                                   "batch.kubernetes.io/job-name=first-train-a0",
                                                   "-o", "json").stdout)["items"]
             if "kwok.finetune.dev/exit-code" in (p["metadata"].get("annotations") or {})), None))
        cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, "--overwrite",
                        "kwok.finetune.dev/delay=1s")
        second = wait_phase(cluster, namespace, "second", "Training", timeout=180)
        assert second["queue"]["admitted"] is True, second["queue"]
        assert suspended(cluster, namespace, "second-train-a0") is False
        assert conditions(workload_of(cluster, namespace, "first-train-a0")).get("Finished") == "True"
        assert status(cluster, namespace, "first")["phase"] != "Training"
        # the first job's evaluation generates on a GPU (serving.gpus 1): Kueue queues its Job too, and
        # the second job's training, older in the queue, holds both GPUs meanwhile
        evaluation = wait_for("the first job's evaluation held by Kueue", lambda: conditions(
            workload_of(cluster, namespace, "first-eval")).get("QuotaReserved") == "False"
            and get(cluster, namespace, "job", "first-eval"), timeout=120)
        assert evaluation["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
        assert evaluation["spec"]["suspend"] is True and status(cluster, namespace, "first")["phase"] == "Evaluating"
        print(f"kueue mode: first admitted, second held then admitted in {time.monotonic() - t0:.1f}s")
    except (AssertionError, TimeoutError) as e:
        logs = f"--- kueue log\n{kueue.log_tail()}\n--- operator log\n{op.log_tail(40)}"
        raise AssertionError(f"{e}\n{logs}") from e
    finally:
        # while Kueue still runs: it removes its finalizers from the Workloads, so the namespace can go
        cluster.kubectl("delete", "finetunejobs", "--all", "-n", namespace, "--wait=true", timeout=90, check=False)
        wait_for("the Workloads gone", lambda: not json.loads(cluster.kubectl(
            "get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json").stdout)["items"], timeout=90)
        pods.close()
        op.stop()

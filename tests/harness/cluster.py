"""Start and stop the test control plane (DESIGN.md §8, docs/controlplane.md).

`start_cluster(work_dir)` builds what is missing (once, cached in `.cache/bin`; see `build`) and starts:

* `ft-controlplane up`: embedded etcd, kube-apiserver (RBAC on), kube-controller-manager and
  kube-scheduler of Kubernetes v1.34.3, all on 127.0.0.1 (tests/controlplane/main.go);
* kwok v0.8.0 with the stages in tests/controlplane/kwok/kwok.yaml, managing fake GPU nodes
  `gpu-node-<i>` (8 x nvidia.com/gpu, 64 CPU, 512Gi, labels `type=kwok`,
  `nvidia.com/gpu.product=A100`, no taint) and playing the PVC provisioner of StorageClass
  `standard`;

then applies `crds/*.yaml` and waits until `/readyz` is ok and every node is Ready and schedulable.

With `FT_USE_EXISTING_CLUSTER=1` and `KUBECONFIG` set, `start_from_env` starts nothing and
returns a `Cluster` for that kubeconfig (kind, k3d or a real cluster).

Run by hand: `python -m tests.harness.cluster up [--runner]` (what `make controlplane` does).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("FT_CACHE_DIR", REPO / ".cache"))
BIN_DIR = CACHE_DIR / "bin"
CONTROLPLANE_DIR = REPO / "tests" / "controlplane"
CRDS_DIR = REPO / "crds"
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"

KUBERNETES_VERSION = "v1.34.3"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT = "A100"
KWOK_NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
KWOK_NODE_LABELS = {"type": "kwok", "nvidia.com/gpu.product": GPU_PRODUCT}
STORAGE_CLASS = "standard"
# kwok stage annotations (tests/controlplane/kwok/kwok.yaml)
KWOK_EXIT_CODE = "kwok.finetune.dev/exit-code"
KWOK_TERMINATION_MESSAGE = "kwok.finetune.dev/termination-message"
KWOK_REASON = "kwok.finetune.dev/reason"
KWOK_DELAY = "kwok.finetune.dev/delay"
KWOK_NEVER_READY_IMAGE = "kwok.invalid/never-ready:0"
"""Pods whose first container runs this image stay Pending with ImagePullBackOff (stage pod-image-pull-backoff)."""


class ClusterError(RuntimeError):
    pass


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Children die with the Python process that started them (even on SIGKILL). The signal is
    tied to the starting *thread*: start components from a long-lived thread (the main one)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# What scripts/build-controlplane.sh puts in BIN_DIR (weed: the S3 store of tests/harness/objectstore.py); it writes a stamp (`.<name>.stamp`) after each binary.
CONTROLPLANE_BINARIES = ("ft-controlplane", "kwok", "helm", "kueue", "ft-coredns", "weed")
# What start_cluster runs; helm and kueue are only needed by the tests that use them.
CLUSTER_BINARIES = ("ft-controlplane", "kwok")


def missing_binaries(names: Iterable[str] = CONTROLPLANE_BINARIES) -> list[str]:
    """The one answer to "is the control plane built": the named binaries that have no finished build in
    BIN_DIR (the build script installs a binary atomically, then writes its stamp)."""
    return [n for n in names if not ((BIN_DIR / n).is_file() and (BIN_DIR / f".{n}.stamp").is_file())]


def run_build_script(verbose: bool = False) -> str:
    """Run scripts/build-controlplane.sh: it rebuilds what is missing or stale, and waits for a build
    another process is already running on the same cache (flock) instead of starting a second one."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-controlplane.sh")],
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    if verbose:
        print(out, end="", file=sys.stderr)
    if proc.returncode != 0:
        raise ClusterError(f"scripts/build-controlplane.sh failed ({proc.returncode}):\n{out[-6000:]}")
    return out


def build(verbose: bool = False) -> str:
    """Build only when a binary is missing: a built control plane starts no Go build, even when its
    stamps are stale (`make controlplane` rebuilds stale binaries). With FT_SKIP_BUILD=1 nothing is
    built; missing cluster binaries are then an error, a missing helm/kueue only touches the tests that run it."""
    missing = missing_binaries()
    if not missing:
        return f"built: {', '.join(CONTROLPLANE_BINARIES)} in {BIN_DIR}"
    if os.environ.get("FT_SKIP_BUILD") == "1":
        if needed := missing_binaries(CLUSTER_BINARIES):
            raise ClusterError(f"{', '.join(needed)} not built in {BIN_DIR} and FT_SKIP_BUILD=1: "
                               "run scripts/build-controlplane.sh")
        return f"skipped (FT_SKIP_BUILD=1); not built: {', '.join(missing)}"
    return run_build_script(verbose)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<{e}>"
    return "\n".join(data.splitlines()[-lines:])


class Cluster:
    """A running cluster: ours (started here) or an existing one (`external=True`).

    Attributes: `kubeconfig` (path), `logs_dir` (Path), `server`, `external`, `data_dir`,
    `gpu_nodes` (names of the kwok GPU nodes), `pv_root` (host dir under which PVCs live).
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike,
        logs_dir: str | os.PathLike,
        *,
        external: bool = False,
        data_dir: str | os.PathLike | None = None,
        server: str | None = None,
        gpu_nodes: Iterable[str] = (),
        pv_root: str | os.PathLike | None = None,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.logs_dir = Path(logs_dir)
        self.external = external
        self.data_dir = Path(data_dir) if data_dir else None
        self.server = server or self._server_from_kubeconfig()
        self.gpu_nodes = list(gpu_nodes)
        self.pv_root = Path(pv_root) if pv_root else None
        self.timings: dict[str, float] = {}
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._stopped = False

    # -- clients --------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env.update(extra)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; returns the CompletedProcess (text). Raises
        ClusterError with stderr when `check` and the command fails."""
        return self._run([KUBECTL, "--kubeconfig", self.kubeconfig, *args], input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        helm = str(BIN_DIR / "helm") if (BIN_DIR / "helm").exists() else (shutil.which("helm") or "helm")
        return self._run([helm, "--kubeconfig", self.kubeconfig, *args], input, check, timeout)

    def _run(self, cmd: list[str], input: str | None, check: bool, timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env())
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd[:1] + cmd[3:])} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def api_client(self):
        """A fresh `kubernetes.client.ApiClient` for this cluster's admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def apply(self, manifest: str | os.PathLike | dict | list, *, server_side: bool = False) -> str:
        """`kubectl apply` a path, a YAML string, or object(s) (dicts)."""
        args = ["apply"]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        if isinstance(manifest, (dict, list)):
            docs = manifest if isinstance(manifest, list) else [manifest]
            return self.kubectl(*args, "-f", "-", input=yaml.safe_dump_all(docs)).stdout
        if isinstance(manifest, os.PathLike) or (isinstance(manifest, str) and "\n" not in manifest
                                                 and os.path.exists(manifest)):
            return self.kubectl(*args, "-f", str(manifest)).stdout
        return self.kubectl(*args, "-f", "-", input=str(manifest)).stdout

    def create_namespace(self, name: str, *, timeout: float = 60) -> str:
        """Create a namespace and wait for its `default` ServiceAccount (pods need it)."""
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0:
                return name
            time.sleep(0.2)
        raise ClusterError(f"ServiceAccount default/{name} not created within {timeout}s")

    def service_account_kubeconfig(self, namespace: str, service_account: str, path: str | os.PathLike,
                                   *, duration: str = "2h", audience: str | None = None) -> str:
        """Write a kubeconfig that authenticates as a ServiceAccount through a bound token
        (TokenRequest API, `kubectl create token`), with this cluster's server and CA."""
        args = ["create", "token", service_account, "-n", namespace, f"--duration={duration}"]
        if audience:
            args.append(f"--audience={audience}")
        token = self.kubectl(*args).stdout.strip()
        cfg = yaml.safe_load(Path(self.kubeconfig).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cl = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = f"system:serviceaccount:{namespace}:{service_account}"
        out = {
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [cl],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": cl["name"], "user": user, "namespace": namespace}}],
        }
        Path(path).write_text(yaml.safe_dump(out))
        os.chmod(path, 0o600)
        return str(path)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of every component log (for failure reports)."""
        if not self.logs_dir.exists():
            return "(no logs)"
        parts = []
        for p in sorted(self.logs_dir.glob("*.log")):
            parts.append(f"----- {p} (last {lines} lines)\n{_tail(p, lines)}")
        return "\n".join(parts) or "(no logs)"

    # -- lifecycle ------------------------------------------------------------------------
    def _server_from_kubeconfig(self) -> str | None:
        try:
            cfg = yaml.safe_load(Path(self.kubeconfig).read_text())
            ctx_name = cfg.get("current-context")
            ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
            return next(c["cluster"]["server"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        except Exception:
            return None

    def _spawn(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_set_pdeathsig, env=self.env(),
            )
        self._procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}\n{self.log_tail(40)}")

    def stop(self, timeout: float = 30) -> None:
        """Stop everything started here (kwok first, then the control plane). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_for(predicate, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling; report the last error on timeout
            last_exc = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


# -- starting ------------------------------------------------------------------------------

def gpu_node(name: str, gpus: int = 8, cpu: str = "64", memory: str = "512Gi") -> dict:
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1Ti", GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {**KWOK_NODE_ANNOTATION, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                **KWOK_NODE_LABELS,
                "nvidia.com/gpu.count": str(gpus),
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {},
        "status": {"capacity": resources, "allocatable": resources},
    }


def wait_nodes_ready(cluster: Cluster, names: Iterable[str], timeout: float = 60) -> None:
    """Wait until each node is Ready=True and carries no not-ready/unreachable taint."""
    names = set(names)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        cluster.check_alive()
        out = cluster.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode == 0:
            pending = set(names)
            for n in json.loads(out.stdout)["items"]:
                name = n["metadata"]["name"]
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])
                )
                tainted = any(
                    t["key"].startswith("node.kubernetes.io/") for t in n.get("spec", {}).get("taints", []) or []
                )
                if ready and not tainted:
                    pending.discard(name)
            if not pending:
                return
            last = f"not ready yet: {sorted(pending)}"
        else:
            last = out.stderr
        time.sleep(0.25)
    raise ClusterError(f"nodes not ready within {timeout}s: {last}\n{cluster.log_tail(40)}")


def apply_crds(cluster: Cluster, crds_dir: Path = CRDS_DIR, timeout: float = 60) -> list[str]:
    files = sorted(p for p in crds_dir.glob("*.yaml") if p.is_file()) if crds_dir.is_dir() else []
    files += sorted(p for p in crds_dir.glob("*.yml") if p.is_file()) if crds_dir.is_dir() else []
    if not files:
        return []
    args = ["apply", "--server-side", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    cluster.kubectl(*args)
    names = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    if names:
        cluster.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                        *[f"crd/{n}" for n in names], timeout=timeout + 10)
    return names


def start_cluster(
    work_dir: str | os.PathLike,
    *,
    gpu_nodes: int = 2,
    gpus_per_node: int = 8,
    timeout: float = 120,
    do_build: bool = True,
    apply_crds_dir: Path | None = CRDS_DIR,
) -> Cluster:
    """Build if needed, start etcd + apiserver + controller-manager + scheduler + kwok, create
    the GPU nodes and the default StorageClass, apply the CRDs. Returns a ready Cluster; on
    failure everything started is stopped and ClusterError carries the log tails."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    if do_build:
        build()
    timings["build_check_s"] = time.monotonic() - t0
    work = Path(work_dir).resolve()
    data = work / "data"
    logs = data / "logs"
    pv_root = work / "pv"
    for d in (data, logs, pv_root):
        d.mkdir(parents=True, exist_ok=True)
    kubeconfig = work / "admin.kubeconfig"

    cluster = Cluster(kubeconfig, logs, data_dir=data, gpu_nodes=[f"gpu-node-{i}" for i in range(gpu_nodes)],
                      pv_root=pv_root)
    try:
        t1 = time.monotonic()
        cluster._spawn("ft-controlplane",
                       [str(BIN_DIR / "ft-controlplane"), "up", "--data-dir", str(data), "--kubeconfig", str(kubeconfig)],
                       logs / "controlplane.log")
        ready_file = data / "ready.json"
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"control plane not ready within {timeout}s\n{cluster.log_tail(40)}")
            time.sleep(0.1)
        info = json.loads(ready_file.read_text())
        cluster.server = info["server"]
        timings["apiserver_ready_s"] = time.monotonic() - t1

        kwok_cfg = (CONTROLPLANE_DIR / "kwok" / "kwok.yaml").read_text().replace("__PV_ROOT__", str(pv_root))
        (data / "kwok.yaml").write_text(kwok_cfg)
        cluster._spawn("kwok",
                       [str(BIN_DIR / "kwok"), "--kubeconfig", str(kubeconfig), "--config", str(data / "kwok.yaml"),
                        "--manage-all-nodes=false",
                        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"],
                       logs / "kwok.log")
        cluster.apply([gpu_node(n, gpus_per_node) for n in cluster.gpu_nodes]
                      + list(yaml.safe_load_all((CONTROLPLANE_DIR / "manifests" / "storageclass.yaml").read_text())))
        if apply_crds_dir is not None and os.environ.get("FT_APPLY_CRDS", "1") != "0":
            apply_crds(cluster, apply_crds_dir)
        wait_nodes_ready(cluster, cluster.gpu_nodes, timeout=timeout)
        timings["nodes_ready_s"] = time.monotonic() - t1
        # the ServiceAccount controller must be running before any pod can be created
        deadline = time.monotonic() + timeout
        while cluster.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode != 0:
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"default ServiceAccount not created\n{cluster.log_tail(40)}")
            time.sleep(0.2)
        timings["total_start_s"] = time.monotonic() - t1
        timings["total_with_build_check_s"] = time.monotonic() - t0
        cluster.timings = timings
        return cluster
    except BaseException:
        cluster.stop()
        raise


def start_from_env(work_dir: str | os.PathLike, **kwargs: Any) -> Cluster:
    """An existing cluster when FT_USE_EXISTING_CLUSTER=1 and KUBECONFIG is set (nothing is
    started; CRDs are applied unless FT_APPLY_CRDS=0), else a fresh test control plane."""
    if os.environ.get("FT_USE_EXISTING_CLUSTER") == "1" and os.environ.get("KUBECONFIG"):
        work = Path(work_dir)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        kubeconfig = os.environ["KUBECONFIG"].split(os.pathsep)[0]
        c = Cluster(kubeconfig, work / "logs", external=True)
        if os.environ.get("FT_APPLY_CRDS", "1") != "0":
            apply_crds(c)
        out = c.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name", check=False)
        c.gpu_nodes = [n.split("/", 1)[1] for n in out.stdout.split()] if out.returncode == 0 else []
        return c
    return start_cluster(work_dir, **kwargs)


# -- command line (make controlplane) ---------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.harness.cluster",
                                 description="Run the test control plane until Ctrl-C.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    upp = sub.add_parser("up", help="build if needed, start everything, print the kubeconfig, wait")
    upp.add_argument("--work-dir", help="default: a new temporary directory")
    upp.add_argument("--runner", action="store_true", help="also start the local pod runner")
    upp.add_argument("--gpu-nodes", type=int, default=2)
    sub.add_parser("build", help="only build the binaries")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(run_build_script(), end="")
        return 0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ft-controlplane-"))
    print(f"starting the test control plane in {work} ...", flush=True)
    cluster = start_cluster(work, gpu_nodes=args.gpu_nodes)
    runner = None
    try:
        if args.runner:
            from tests.harness.podrunner import LocalRunnerProcess

            runner = LocalRunnerProcess.start(cluster, work / "runner")
        print(json.dumps(cluster.timings), flush=True)
        print(f"\nready. export KUBECONFIG={cluster.kubeconfig}\nlogs: {cluster.logs_dir}\n"
              f"helm: {BIN_DIR / 'helm'}\nCtrl-C to stop.", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        while not stop:
            cluster.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if runner:
            runner.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make cluster-demo`: the cluster path on a laptop, until Ctrl-C.

Starts the test control plane (real kube-apiserver, etcd, controller-manager, scheduler; kwok GPU
nodes) and the local pod runner, installs the chart with helm (its CRDs, RBAC, the job namespace's
trainer ServiceAccount and artifacts claim, the operator's settings), and runs the operator as a process
(there is no container runtime here, so the chart's Deployment has 0 replicas): with a token of the
chart's ServiceAccount and the environment of the chart's Deployment, i.e. its values. It then creates
the claims `examples/cluster-quickstart.yaml` reads (`models`, `data`) in the `default` namespace and
seeds them with the tiny chat model and the quickstart data, and prints the commands to try.

Ctrl-C (SIGINT) or SIGTERM stops the operator, the runner (and every pod process it runs) and the
control plane; every child also dies with this process (PR_SET_PDEATHSIG).

Run: `python -m tests.harness.demo [--work-dir D]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import yaml

from finetune_api.contract.vllm import API_KEY_SECRET, API_KEY_SECRET_KEY

from tests.harness.cluster import CACHE_DIR, REPO, STORAGE_CLASS, Cluster, start_cluster, wait_for
from tests.harness.operator import Operator
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS, LocalRunnerProcess

CHART = REPO / "charts" / "finetune-operator"
RELEASE = "finetune-operator"
SYSTEM_NAMESPACE = "finetune-system"
JOB_NAMESPACE = "default"
QUICKSTART_DATA = REPO / "examples" / "data" / "quickstart"
TINY_MODEL = CACHE_DIR / "models" / "tiny-chat"
EXAMPLE = "examples/cluster-quickstart.yaml"

VALUES = {
    "replicaCount": 0,  # no container runtime: the operator runs as a process with this Deployment's env
    "watchNamespaces": [JOB_NAMESPACE],  # a namespaced install: a Role there, its trainer ServiceAccount and claim
    "queue": {"mode": "none"},
    "jobs": {
        "cpuRuntime": True,
        "progressIntervalSeconds": 3,
        "podNodeSelector": NODE_SELECTOR,  # every job pod runs for real on the local pod runner
        "podTolerations": TOLERATIONS,
        # the adapter pool on this CPU node (the pool's size is the admin's, never a job's)
        "adapterPool": {"gpus": 0, "cpu": "1", "memory": "4Gi", "maxModelLen": 256},
    },
    "storage": {"artifactsPvc": {"create": True, "storageClassName": STORAGE_CLASS, "size": "1Gi"}},
}
SEEDED_CLAIMS = ("models", "data")
DEMO_API_KEY = "cluster-demo-key"
"""The serving endpoint's API key in the job namespace (Secret `finetune-serving-api-key`)."""


def claim_dir(cluster: Cluster, namespace: str, claim: str) -> Path:
    """The host directory of a bound claim (kwok binds `standard` claims to hostPath volumes)."""
    def volume() -> str | None:
        out = cluster.kubectl("get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.spec.volumeName}", check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    name = wait_for(volume, timeout=60, what=f"claim {namespace}/{claim} bound")
    pv = json.loads(cluster.kubectl("get", "pv", name, "-o", "json").stdout)
    path = Path(pv["spec"]["hostPath"]["path"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_mount_root(cluster: Cluster, namespace: str, root: Path, claims: tuple[str, ...]) -> Path:
    """A claims mount root (`storage.mountRoot`, `FT_PVC_MOUNT_ROOT`) whose `<claim>` entries link to the
    claims' volumes. The pod runner maps mount paths only where a pod spec writes them; the operator also
    names paths at run time (an adapter's directory in vLLM's `/v1/load_lora_adapter`). Under this root a
    pod's path is a host path too, so both resolve to the same files."""
    root.mkdir(parents=True, exist_ok=True)
    for claim in claims:
        link = root / claim
        if not link.is_symlink():
            link.symlink_to(claim_dir(cluster, namespace, claim), target_is_directory=True)
    return root


def seed_quickstart(cluster: Cluster, namespace: str) -> None:
    """Claims `models` (the tiny chat model at tiny-chat/) and `data` (train/validation/eval.jsonl)."""
    from finetune_trainer.tiny_model import build_tiny_model

    cluster.apply([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                             "resources": {"requests": {"storage": "1Gi"}}}} for claim in SEEDED_CLAIMS])
    build_tiny_model(TINY_MODEL)
    shutil.copytree(TINY_MODEL, claim_dir(cluster, namespace, "models") / "tiny-chat", dirs_exist_ok=True)
    data = claim_dir(cluster, namespace, "data")
    for split in ("train", "validation", "eval"):
        shutil.copy(QUICKSTART_DATA / f"{split}.jsonl", data)


def chart_operator_env(cluster: Cluster) -> dict[str, str]:
    """The operator container's settings as the chart rendered them (the FT_* values), minus what is a
    container's own (ports are picked free by `Operator`, HOME is this user's)."""
    deployment = json.loads(cluster.kubectl("get", "deployment", RELEASE, "-n", SYSTEM_NAMESPACE, "-o", "json").stdout)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env") or []
            if "value" in e and e["name"] not in ("HOME", "FT_METRICS_PORT")}


def commands(kubeconfig: str) -> str:
    service = "quickstart-serve"
    address = (f"kubectl get endpointslices -l kubernetes.io/service-name={service} "
               "-o jsonpath='{.items[0].endpoints[0].addresses[0]}:{.items[0].ports[0].port}'")
    return "\n".join([
        "ready. In another terminal:",
        f"  export KUBECONFIG={kubeconfig}",
        f"  kubectl apply -f {REPO / EXAMPLE}",
        "  kubectl get ftj -w                      # Validating, Training (step/total, loss), ..., Serving",
        "  kubectl logs -f job/quickstart-train-a0  # the trainer's output (once Training)",
        "then chat with the served adapter (its address is in the Service's EndpointSlice):",
        f"  ADDRESS=$({address})",
        "  curl -s http://$ADDRESS/v1/chat/completions -H \"Authorization: Bearer $(kubectl get secret "
        f"{API_KEY_SECRET} -o jsonpath='{{.data.{API_KEY_SECRET_KEY}}}' | base64 -d)\" "
        "-H 'Content-Type: application/json' -d '{\"model\": "
        "\"quickstart\", \"max_tokens\": 8, \"messages\": [{\"role\": \"system\", \"content\": "
        "\"Classify the support message as billing, technical, shipping or account.\"}, {\"role\": \"user\", "
        "\"content\": \"Hi, my invoice river blue, please help.\"}]}'",
        "Ctrl-C stops everything.",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.harness.demo", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--work-dir", help="default: a new temporary directory")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it like Ctrl-C
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ft-cluster-demo-")).resolve()
    print(f"starting the test control plane, the local pod runner and the operator in {work} ...", flush=True)
    with contextlib.ExitStack() as running:  # stops what started, last first, even when one stop fails
        running.callback(print, "stopped.", flush=True)
        try:
            cluster = start_cluster(work / "cluster", apply_crds_dir=None)  # the chart installs the CRDs
            running.callback(cluster.stop)
            runner = LocalRunnerProcess.start(cluster, work / "runner")
            running.callback(runner.stop)
            values = work / "values.yaml"
            mount_root = work / "pvc"
            values.write_text(yaml.safe_dump({**VALUES, "storage": {**VALUES["storage"], "mountRoot": str(mount_root)}}))
            cluster.helm("install", RELEASE, str(CHART), "-n", SYSTEM_NAMESPACE, "--create-namespace",
                         "-f", str(values))
            kubeconfig = cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, RELEASE, work / "operator.kubeconfig",
                                                            duration="24h")
            operator = Operator(kubeconfig, cluster.logs_dir / "operator.log", runner, **chart_operator_env(cluster)).start()
            running.callback(operator.stop)
            seed_quickstart(cluster, JOB_NAMESPACE)
            host_mount_root(cluster, JOB_NAMESPACE, mount_root, (*SEEDED_CLAIMS, "finetune-artifacts"))
            cluster.apply({"apiVersion": "v1", "kind": "Secret",  # what the namespace's admin provides
                           "metadata": {"name": API_KEY_SECRET, "namespace": JOB_NAMESPACE},
                           "stringData": {API_KEY_SECRET_KEY: DEMO_API_KEY}})
            print(f"logs: {cluster.logs_dir} (operator.log, podrunner.log; pods under {work / 'runner' / 'pods'})")
            print(commands(cluster.kubeconfig), flush=True)
            while True:
                time.sleep(1)
                cluster.check_alive()
                if not runner.alive():
                    raise RuntimeError(f"the local pod runner exited; see {runner.log_file}")
                operator.check_alive()
        except KeyboardInterrupt:
            print("stopping ...", flush=True)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())

"""The operator as the tests run it: a subprocess (`python -m finetune_operator.main`) with the
ServiceAccount of a ClusterRole built from `rbac.REQUIRED_RULES`, plus helpers the api and e2e tiers
share (waiting, reading a job's status, a namespace with the claims and ServiceAccount an admin
provides, and `PodDriver`, which decides how kwok's Job pods end)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from tests.harness.cluster import (
    KWOK_DELAY,
    KWOK_EXIT_CODE,
    KWOK_TERMINATION_MESSAGE,
    REPO,
    STORAGE_CLASS,
    _set_pdeathsig,
)
from tests.harness.cluster import wait_for as cluster_wait_for

from finetune_api.contract.termination import PhaseSummary
from tests.harness.podrunner.network import sandbox_argv
from tests.harness.summaries import PREPARED
from finetune_api.contract.vllm import API_KEY_SECRET, API_KEY_SECRET_KEY
from finetune_operator import rbac
from finetune_api.contract.launch import free_port  # noqa: F401 - the harness's port picker

if TYPE_CHECKING:
    from tests.harness.podrunner import LocalRunnerProcess

SYSTEM_NS = "finetune-system"
SA = "finetune-operator"
def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60, interval: float = 0.3) -> Any:
    """`cluster.wait_for` with the description first, as these tests read best."""
    return cluster_wait_for(probe, timeout=timeout, interval=interval, what=what)


def operator_kubeconfig_for(cluster, directory: Path) -> str:
    """A kubeconfig for the operator's ServiceAccount, bound to exactly `rbac.REQUIRED_RULES`."""
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": SYSTEM_NS}},
        rbac.cluster_role("finetune-operator-test"),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "finetune-operator-test"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "finetune-operator-test"},
         "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": SYSTEM_NS}]},
    ])
    return cluster.service_account_kubeconfig(SYSTEM_NS, SA, directory / "operator.kubeconfig", duration="4h")


class Operator:
    """The operator as a subprocess; `kill()` is a crash (SIGKILL), `stop()` a clean shutdown.

    With `runner` (a `LocalRunnerProcess` that has a pod bridge) it resolves names as an in-cluster operator
    does: through the cluster DNS, with a resolv.conf of the operator's namespace bind-mounted over
    /etc/resolv.conf in a mount namespace of its own (the runner's pod sandbox), while keeping the host's
    network, where the API server listens on 127.0.0.1; the runner's Service proxy routes the ClusterIPs
    those names resolve to. Otherwise it is an operator outside the cluster (`service_addressing:
    endpoints`): it calls Services at a ready endpoint's pod address."""

    def __init__(self, kubeconfig: str, log_path: Path, runner: LocalRunnerProcess | None = None, **env: str) -> None:
        self.kubeconfig, self.log_path, self.extra_env = kubeconfig, log_path, env
        self.runner = runner
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None

    def _argv(self) -> tuple[list[str], dict[str, str]]:
        """The operator's command line, and how it names Services: as the runner allows (it overrides the
        env given, e.g. the chart's), or out of the cluster unless the env given says otherwise."""
        argv = [sys.executable, "-m", "finetune_operator.main"]
        if self.runner is None:
            return argv, {"FT_SERVICE_ADDRESSING": "endpoints", **self.extra_env}
        if self.runner.bridge is None:  # no Service proxy: ClusterIPs are not routed (the runner logs it)
            return argv, {**self.extra_env, "FT_SERVICE_ADDRESSING": "endpoints"}
        resolv = self.log_path.with_name(f"{self.log_path.stem}.resolv.conf")
        resolv.write_text(self.runner.resolv_conf(SYSTEM_NS))
        return (sandbox_argv(argv, binds={resolv: Path("/etc/resolv.conf")}),
                {**self.extra_env, "FT_SERVICE_ADDRESSING": "dns"})

    def start(self) -> Operator:
        argv, settings = self._argv()
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "FT_METRICS_PORT": str(self.metrics_port),
               "FT_LIVENESS": f"http://127.0.0.1:{free_port()}/healthz", "FT_QUEUE_MODE": "embedded",
               "FT_PROGRESS_INTERVAL_SECONDS": "2", "OMP_NUM_THREADS": "1", **settings}
        env.pop("FT_PEERING", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_set_pdeathsig)
        wait_for("the operator's /metrics", self.metrics_text, timeout=60)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        self.check_alive()
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return ""

    def requests(self) -> dict[tuple[str, str], float]:
        out = {}
        for line in self.metrics_text().splitlines():
            if line.startswith("finetune_operator_api_requests_total{"):
                labels, value = line[len("finetune_operator_api_requests_total{"):].split("} ")
                parts = dict(p.split("=", 1) for p in labels.split(","))
                out[(parts["verb"].strip('"'), parts["resource"].strip('"'))] = float(value)
        return out

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        log = self.log_path.read_text(errors="replace")
        # RBAC refusals only (k8s.K8s' own check, or the API server's "User … cannot"), not e.g. a 403 for
        # writing into a namespace that is being deleted
        denied = re.search(r'NotPermitted|forbidden: User "[^"]*" cannot', log)
        assert denied is None, f"the operator was refused an API call ({denied.group(0)!r}):\n{self.log_tail()}"


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
PHASE_LABEL = "finetune.dev/phase"
DEFAULT_OUTCOME = {KWOK_EXIT_CODE: "0", KWOK_DELAY: "1s"}
PREPARE_OUTCOME = {**DEFAULT_OUTCOME, KWOK_TERMINATION_MESSAGE: PREPARED.encode()}
"""A prepare pod no test planned reports valid data, as the trainer does (the operator refuses a prepare
that succeeds without its data report)."""


class PodDriver:
    """Decides how every Job pod of a namespace ends, the moment the pod appears: the plan registered for
    its Job or its phase, else `PREPARE_OUTCOME` for prepare pods and `DEFAULT_OUTCOME` (exit 0 after 1 s,
    no termination message) for the others.

    kwok ends a pod only once it carries an exit code (tests/controlplane/kwok/kwok.yaml), so a pod waits
    for this decision however late the watch delivers it: there is no race against a default completion.
    Register plans with `on` before creating the objects whose pods they decide."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.plans: dict[str, dict[str, str]] = {}
        self.decided: set[str] = set()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @classmethod
    def passing(cls, cluster, namespace: str) -> PodDriver:
        """A driver whose prepare, train and eval pods succeed with passing summaries (the gates pass)."""
        from tests.harness.summaries import PREPARED, TRAINED, evaluated

        pods = cls(cluster, namespace)
        pods.on("prepare", 0, PREPARED)
        pods.on("train", 0, TRAINED)
        pods.on("eval", 0, evaluated(True))
        return pods

    def on(self, phase: str, exit_code: int, message: PhaseSummary | None = None, delay: str = "2s",
           job: str | None = None) -> None:
        """Pods of `phase` (or of Job `job`) end with `exit_code` and the trainer's termination message."""
        annotations = {KWOK_EXIT_CODE: str(exit_code), KWOK_DELAY: delay}
        if message is not None:
            annotations[KWOK_TERMINATION_MESSAGE] = message.encode()
        self.plans[job or phase] = annotations

    def outcome(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The annotations that end a pod with these labels; None for a pod no Job owns (it keeps running)."""
        if JOB_NAME_LABEL not in labels:
            return None
        plan = self.plans.get(labels[JOB_NAME_LABEL]) or self.plans.get(labels.get(PHASE_LABEL, ""))
        if plan:
            return plan
        return PREPARE_OUTCOME if labels.get(PHASE_LABEL) == "prepare" else DEFAULT_OUTCOME

    def _run(self) -> None:
        from kubernetes import client, watch

        api = client.CoreV1Api(self.cluster.api_client())
        while not self.stop_flag.is_set():
            try:
                # each stream starts with a full list, so a pod created while the watch restarts is not missed
                for event in watch.Watch().stream(api.list_namespaced_pod, self.namespace, timeout_seconds=5):
                    if event["type"] != "DELETED":
                        self._decide(api, event["object"])
                    if self.stop_flag.is_set():
                        return
            except Exception:  # noqa: BLE001 - the watch restarts; the next list decides any undecided pod
                time.sleep(0.2)

    def _decide(self, api, pod) -> None:
        meta = pod.metadata
        outcome = self.outcome(meta.labels or {})
        if (outcome is None or meta.uid in self.decided or meta.deletion_timestamp
                or KWOK_EXIT_CODE in (meta.annotations or {})):
            return
        api.patch_namespaced_pod(meta.name, self.namespace, {"metadata": {"annotations": outcome}})
        self.decided.add(meta.uid)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)


SERVING_API_KEY = "e2e-serving-key"
"""The serving endpoints' API key in every test namespace (Secret `finetune-serving-api-key`)."""


def api_key_secret(namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": API_KEY_SECRET, "namespace": namespace},
            "stringData": {API_KEY_SECRET_KEY: SERVING_API_KEY}}


def setup_namespace(cluster, namespace: str, api_key: bool = True) -> None:
    """What a platform admin provides per namespace: the trainer's ServiceAccount, the serving API key
    and the claims."""
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "finetune-trainer",
                                                                          "namespace": namespace}},
                   *([api_key_secret(namespace)] if api_key else [])] + [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                  "resources": {"requests": {"storage": "1Gi"}}}}
        for claim in ("models", "data", "finetune-artifacts")
    ])


def claim_dir(cluster, namespace: str, claim: str) -> Path:
    """The host directory of a bound claim (kwok binds `standard` claims to hostPath volumes)."""
    volume = wait_for(f"claim {claim} bound",
                      lambda: ((get(cluster, namespace, "pvc", claim) or {}).get("spec") or {}).get("volumeName"))
    pv = json.loads(cluster.kubectl("get", "pv", volume, "-o", "json").stdout)
    path = Path(pv["spec"]["hostPath"]["path"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_claims(cluster, namespace: str, splits: tuple[str, ...]) -> Path:
    """The tiny model on the `models` claim and the quickstart's `splits` on `data`, as a user would put
    them there; returns the artifacts claim's directory."""
    from finetune_trainer.tiny_model import build_tiny_model

    model = REPO / ".cache" / "models" / "tiny-chat"
    build_tiny_model(model)
    shutil.copytree(model, claim_dir(cluster, namespace, "models") / "tiny-chat", dirs_exist_ok=True)
    for split in splits:
        shutil.copy(REPO / "examples" / "data" / "quickstart" / f"{split}.jsonl", claim_dir(cluster, namespace, "data"))
    return claim_dir(cluster, namespace, "finetune-artifacts")


# The two lines every training rank prints (finetune_trainer/train/runner.py): its rendezvous, its step count.
RANK_LINE = re.compile(r"train: rank (\d+) of (\d+) on (\S+)(?: joined the process group at (\S+)|: (\d+) of (\d+) steps)")


def training_pod_lines(cluster, local_runner, namespace: str, job: str) -> dict[str, list[str]]:
    """Each training pod's rendezvous and per-rank step lines (the trainer prints one of each per rank)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                      f"finetune.dev/job={job},finetune.dev/phase=train", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: [line for line in local_runner.logs(namespace, p["metadata"]["name"]).splitlines()
                                    if RANK_LINE.search(line)] for p in pods}


def get(cluster, namespace: str, kind: str, name: str) -> dict | None:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def names_of(cluster, namespace: str, kind: str) -> list[str]:
    out = cluster.kubectl("get", kind, "-n", namespace, "-o", "json")
    return sorted(i["metadata"]["name"] for i in json.loads(out.stdout)["items"])


def status(cluster, namespace: str, name: str) -> dict:
    return (get(cluster, namespace, "finetunejob", name) or {}).get("status") or {}


def wait_phase(cluster, namespace: str, name: str, phase: str, timeout: float = 60) -> dict:
    return wait_for(f"{name} in phase {phase}",
                    lambda: (s := status(cluster, namespace, name)).get("phase") == phase and s, timeout)

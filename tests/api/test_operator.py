"""The real operator (`python -m finetune_operator.main`) against the test control plane, running as a
ServiceAccount bound to a ClusterRole built from `rbac.REQUIRED_RULES` (a missing permission fails
these tests). kwok plays the pods: they succeed after ~1 s unless annotated with an exit code and a
termination message, which `PodDriver` does as soon as the Job controller creates them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from finetune_operator import rbac

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]
SYSTEM_NS = "finetune-system"
SA = "finetune-operator"
EXIT_CODE = "kwok.finetune.dev/exit-code"
MESSAGE = "kwok.finetune.dev/termination-message"
DELAY = "kwok.finetune.dev/delay"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster, tmp_path_factory) -> str:
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
    token = cluster.kubectl("create", "token", SA, "-n", SYSTEM_NS, "--duration=4h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": SA}}],
    }
    path = tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


class Operator:
    """The operator as a subprocess; `kill()` is a crash (SIGKILL), `stop()` a clean shutdown."""

    def __init__(self, kubeconfig: str, log_path: Path, **env: str) -> None:
        self.kubeconfig, self.log_path, self.extra_env = kubeconfig, log_path, env
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Operator":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "FT_METRICS_PORT": str(self.metrics_port),
               "FT_LIVENESS": f"http://127.0.0.1:{free_port()}/healthz", "FT_QUEUE_MODE": "embedded",
               "FT_PROGRESS_INTERVAL_SECONDS": "2", "OMP_NUM_THREADS": "1", **self.extra_env}
        env.pop("FT_PEERING", None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "finetune_operator.main"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        wait_for("the operator's /metrics", self.metrics_text, timeout=60)
        return self

    def metrics_text(self) -> str:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
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
        assert "NotPermitted" not in self.log_path.read_text(errors="replace"), self.log_tail()
        assert "Forbidden" not in self.log_path.read_text(errors="replace") and \
            " 403" not in self.log_path.read_text(errors="replace"), self.log_tail()


@pytest.fixture
def operator(cluster, operator_kubeconfig, tmp_path):
    op = Operator(operator_kubeconfig, tmp_path / "operator.log").start()
    yield op
    op.stop()


class PodDriver:
    """Annotates the pods of a given job phase with a kwok exit code the moment they appear."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.plans: dict[str, dict[str, str]] = {}
        self.done: set[str] = set()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def on(self, phase: str, exit_code: int, message: dict | None = None, delay: str = "2s",
           job: str | None = None) -> None:
        annotations = {EXIT_CODE: str(exit_code), DELAY: delay}
        if message is not None:
            annotations[MESSAGE] = json.dumps(message)
        self.plans[job or phase] = annotations

    def _run(self) -> None:
        from kubernetes import client, watch

        api = client.CoreV1Api(self.cluster.api_client())
        while not self.stop_flag.is_set():
            try:
                for event in watch.Watch().stream(api.list_namespaced_pod, self.namespace, timeout_seconds=5):
                    pod = event["object"]
                    labels = pod.metadata.labels or {}
                    plan = self.plans.get(labels.get("batch.kubernetes.io/job-name", "")) or self.plans.get(
                        labels.get("finetune.dev/phase", ""))
                    if plan and pod.metadata.name not in self.done and not pod.metadata.deletion_timestamp:
                        self.done.add(pod.metadata.name)
                        api.patch_namespaced_pod(pod.metadata.name, self.namespace, {"metadata": {"annotations": plan}})
                    if self.stop_flag.is_set():
                        return
            except Exception:  # noqa: BLE001 - the watch restarts; a real failure shows in the test's asserts
                time.sleep(0.2)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)


@pytest.fixture
def pods(cluster, namespace):
    driver = PodDriver(cluster, namespace)
    yield driver
    driver.close()


# -- helpers ---------------------------------------------------------------------------------------

def ftj(name: str, **spec: Any) -> dict:
    base = {
        "model": {"uri": "pvc://models/tiny", "name": "tiny"},
        "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
        "resources": {"nodes": 1, "gpusPerNode": 1},
        "retry": {"maxAttempts": 3, "backoffSeconds": 0},
        "evaluation": {"gates": [{"metric": "exact_match", "min": 0.8}]},
    }
    base.update(spec)
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": base}


def setup_namespace(cluster, namespace: str) -> None:
    """What a platform admin provides per namespace: the trainer's ServiceAccount and the claims."""
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "finetune-trainer",
                                                                          "namespace": namespace}}] + [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "standard",
                  "resources": {"requests": {"storage": "1Gi"}}}}
        for claim in ("models", "data", "finetune-artifacts")
    ])


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


def admit(cluster, namespace: str, name: str, **queue: Any) -> None:
    """What the embedded queue does on admission (the queue's own tests cover the decision)."""
    patch = {"status": {"queue": {"admitted": True, **queue}}}
    cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))


def events_of(cluster, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name},involvedObject.kind=FineTuneJob", "-o", "json")
    return [e["reason"] for e in sorted(json.loads(out.stdout)["items"], key=lambda e: e.get("eventTime") or "")]


def start_training(cluster, namespace: str, name: str, pods: PodDriver, **spec: Any) -> dict:
    setup_namespace(cluster, namespace)
    cluster.apply({**ftj(name, **spec), "metadata": {"name": name, "namespace": namespace}})
    wait_phase(cluster, namespace, name, "Queued")
    admit(cluster, namespace, name)
    return wait_phase(cluster, namespace, name, "Training")


# -- tests -----------------------------------------------------------------------------------------

def test_happy_path_through_training_and_as_far_as_kwok_drives_evaluation(cluster, namespace, operator, pods):
    pods.on("train", 0, {"ok": True, "step": 10, "loss": 0.5, "trainTokens": 1000}, delay="4s")
    pods.on("prepare", 0, {"ok": True, "data": {"trainExamples": 120, "evalExamples": 12}})
    pods.on("eval", 0, {"ok": True, "passed": True, "score": "exact_match 0.9 (base 0.1)", "items": 12,
                        "metrics": [{"name": "exact_match", "base": 0.1, "tuned": 0.9}],
                        "gates": [{"metric": "exact_match", "passed": True, "message": "0.9 >= 0.8"}]})
    training = start_training(cluster, namespace, "happy", pods)
    assert training["attempts"]["count"] == 1 and training["observedGeneration"] == 1
    assert training["data"]["trainExamples"] == 120
    for kind, name in (("configmap", "happy-config"), ("job", "happy-prepare"), ("job", "happy-train-a0"),
                       ("service", "happy-train")):
        owners = get(cluster, namespace, kind, name)["metadata"]["ownerReferences"]
        assert [o["kind"] for o in owners] == ["FineTuneJob"], (kind, name)
    deploying = wait_phase(cluster, namespace, "happy", "Deploying", timeout=90)
    assert deploying["evaluation"]["passed"] is True and deploying["gpuSeconds"] > 0
    conditions = {c["type"]: c["status"] for c in deploying["conditions"]}
    assert conditions["Validated"] == conditions["Admitted"] == conditions["Trained"] == conditions["Evaluated"] == "True"
    assert get(cluster, namespace, "deployment", "vllm-tiny") is not None
    assert events_of(cluster, namespace, "happy")[:5] == ["Validating", "Queued", "Training", "Evaluating", "Deploying"]
    assert names_of(cluster, namespace, "jobs") == ["happy-eval", "happy-prepare", "happy-train-a0"]


def test_bad_data_fails_at_validating_with_the_trainers_reason(cluster, namespace, operator, pods):
    error = "datasets.train line 7: a row needs `messages`"
    pods.on("prepare", 1, {"ok": False, "error": error, "data": {"trainExamples": 6}})
    setup_namespace(cluster, namespace)
    cluster.apply({**ftj("bad"), "metadata": {"name": "bad", "namespace": namespace}})
    failed = wait_phase(cluster, namespace, "bad", "Failed")
    assert failed["reason"] == "ValidationFailed" and failed["message"] == error
    assert "Failed" not in [c["type"] for c in failed["conditions"]]
    assert names_of(cluster, namespace, "jobs") == ["bad-prepare"]
    assert "ValidationFailed" in events_of(cluster, namespace, "bad")


def test_user_error_in_training_fails_without_retry(cluster, namespace, operator, pods):
    pods.on("train", 1, {"ok": False, "error": "loss is NaN at step 3"})
    start_training(cluster, namespace, "user", pods)
    failed = wait_phase(cluster, namespace, "user", "Failed")
    assert failed["reason"] == "TrainingFailed" and "loss is NaN" in failed["message"]
    assert failed["attempts"]["count"] == 1 and failed["attempts"]["infrastructureFailures"] == 0
    time.sleep(3)
    assert names_of(cluster, namespace, "jobs") == ["user-prepare", "user-train-a0"]


def test_killed_training_retries_as_the_next_attempt(cluster, namespace, operator, pods):
    pods.on("train", 137, job="kill-train-a0")
    pods.on("train", 0, {"ok": True, "step": 5}, job="kill-train-a1", delay="30s")
    start_training(cluster, namespace, "kill", pods)
    retried = wait_for("attempt 1", lambda: (s := status(cluster, namespace, "kill"))["attempts"]["count"] == 2 and s)
    assert retried["attempts"]["infrastructureFailures"] == 1
    assert retried["attempts"]["lastFailure"].startswith("attempt 0: exit code 137")
    assert names_of(cluster, namespace, "jobs") == ["kill-prepare", "kill-train-a0", "kill-train-a1"]
    assert "Retrying" in events_of(cluster, namespace, "kill")


def test_queue_eviction_stops_training_and_resumes_as_a_new_attempt(cluster, namespace, operator, pods):
    pods.on("train", 0, {"ok": True}, delay="60s")
    start_training(cluster, namespace, "evict", pods)
    patch = {"status": {"queue": {"evictionRequested": True}}}
    cluster.kubectl("patch", "finetunejob", "evict", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))
    queued = wait_phase(cluster, namespace, "evict", "Queued")
    assert queued["reason"] == "Preempted" and queued["attempts"]["preemptions"] == 1
    assert queued["attempts"]["infrastructureFailures"] == 0 and queued["queue"]["admitted"] is False
    wait_for("attempt 0 deleted", lambda: "evict-train-a0" not in names_of(cluster, namespace, "jobs"))
    admit(cluster, namespace, "evict")
    training = wait_phase(cluster, namespace, "evict", "Training")
    assert training["attempts"]["count"] == 2
    assert names_of(cluster, namespace, "jobs") == ["evict-prepare", "evict-train-a1"]


def test_a_failing_gate_ends_rejected_without_a_deployment(cluster, namespace, operator, pods):
    pods.on("eval", 0, {"ok": True, "passed": False, "score": "exact_match 0.4 (base 0.1)", "items": 12,
                        "metrics": [{"name": "exact_match", "base": 0.1, "tuned": 0.4}],
                        "gates": [{"metric": "exact_match", "passed": False, "message": "0.4 < 0.8"}]})
    pods.on("train", 0, {"ok": True, "step": 10})
    start_training(cluster, namespace, "gate", pods)
    rejected = wait_phase(cluster, namespace, "gate", "Rejected", timeout=90)
    assert rejected["reason"] == "GatesNotPassed" and "0.4 < 0.8" in rejected["message"]
    assert rejected["evaluation"]["passed"] is False
    assert names_of(cluster, namespace, "deployments") == []


def test_operator_crash_mid_training_creates_no_duplicates(cluster, namespace, operator, pods, operator_kubeconfig,
                                                           tmp_path):
    pods.on("train", 0, {"ok": True}, delay="60s")
    before = start_training(cluster, namespace, "crash", pods)
    operator.kill()
    restarted = Operator(operator_kubeconfig, tmp_path / "restarted.log").start()
    try:
        wait_for("the restarted operator to settle", lambda: restarted.requests() is not None, timeout=10)
        time.sleep(5)
        after = status(cluster, namespace, "crash")
        assert after["phase"] == "Training" and after["attempts"] == before["attempts"]
        assert names_of(cluster, namespace, "jobs") == ["crash-prepare", "crash-train-a0"]
        creates = {k: v for k, v in restarted.requests().items() if k[0] in ("create", "patch") and k[1] != "events"}
        assert creates == {}, f"the restarted operator wrote {creates}"
    finally:
        restarted.stop()


def test_deleting_a_job_mid_training_leaves_no_children(cluster, namespace, operator, pods):
    pods.on("train", 0, {"ok": True}, delay="60s")
    start_training(cluster, namespace, "gone", pods)
    cluster.kubectl("delete", "finetunejob", "gone", "-n", namespace, "--wait=true", timeout=60)
    for kind in ("jobs", "configmaps", "services", "pods"):
        wait_for(f"no {kind} of the deleted job", lambda k=kind: not [
            n for n in names_of(cluster, namespace, k) if n.startswith("gone-")], timeout=60)

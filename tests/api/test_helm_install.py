"""`helm install` of charts/finetune-operator into the test control plane (RBAC on): the operator runs with
the chart's ServiceAccount, its arguments and its env, under the chart's ValidatingAdmissionPolicies,
completes a FineTuneJob as far as kwok drives the pods, leaves the children alone when the same job is
applied again, and `helm uninstall` leaves nothing behind but the CRDs. The default install is namespaced
(the release namespace, Roles there); the cluster-wide mode is the other case.

There is no container runtime: the chart's Deployment runs 0 replicas and the operator runs here as a
subprocess (`python -m kopf run` with the Deployment's own args and env) on a kubeconfig holding a token
of the chart's ServiceAccount. kwok ends each job pod with the exit code and termination message that
`PodDriver` (tests/harness/operator.py) puts on it, playing the trainer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_api.contract.termination import PhaseSummary
from tests.harness.cluster import KUBECTL
from tests.harness.operator import Operator, PodDriver, free_port, wait_for
from tests.harness.summaries import PREPARED, TRAINED, evaluated
from tests.unit.chart.chart import CHART

pytestmark = pytest.mark.api

# What the trainer would write as its termination message, per phase (label finetune.dev/phase).
TRAINER_RESULTS: dict[str, PhaseSummary] = {"prepare": PREPARED, "train": TRAINED, "eval": evaluated(True)}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "FineTuneQueue",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def foreign_job(namespace: str) -> dict[str, Any]:
    """A Job the operator never makes: not labelled as ours, another image."""
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "not-ours", "namespace": namespace},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "x", "image": "docker.io/library/busybox:1.36"}]}}}}


def dry_run_create(kubeconfig: str, obj: dict[str, Any]) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "create", "--dry-run=server", "-f", "-"],
                          input=json.dumps(obj), capture_output=True, text=True, timeout=60)


class ChartOperator(Operator):
    """The chart's Deployment, run as a local process: same command, args and env; only the ports move.
    Reading /metrics, log tails and the clean stop (which fails on any 403) come from `Operator`."""

    def __init__(self, deployment: dict[str, Any], kubeconfig: str, log_path: Path) -> None:
        super().__init__(kubeconfig, log_path)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:3] == ["python", "-m", "kopf"], container["command"]
        health = f"127.0.0.1:{free_port()}"
        args = [a.replace("0.0.0.0:8080", health) if a.startswith("--liveness") else a for a in container["args"]]
        self.command = [sys.executable, *container["command"][1:], *args]
        self.env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        self.env.pop("HOME")  # the pod's /tmp emptyDir; here the user's home is fine
        self.env.update(FT_METRICS_PORT=str(self.metrics_port), POD_ID=f"test-{self.metrics_port}",
                        KUBECONFIG=str(kubeconfig), OMP_NUM_THREADS="1")

    def start(self) -> ChartOperator:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, env={**os.environ, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.log_path.parent)
        wait_for("the operator's /metrics", self.metrics_text, timeout=90)
        return self


class Install:
    """One release of the chart with its own namespaces and queue name."""

    def __init__(self, cluster, tmp_path: Path, cluster_wide: bool) -> None:
        suffix = uuid.uuid4().hex[:5]
        self.cluster, self.tmp = cluster, tmp_path
        self.release = f"ft{suffix}"
        self.namespace = cluster.create_namespace(f"ft{suffix}-system")
        # The default install runs jobs in its own namespace; cluster-wide, in a team namespace.
        self.job_namespace = cluster.create_namespace(f"ft{suffix}-ml") if cluster_wide else self.namespace
        self.queue = f"ft{suffix}-queue"
        namespaces = {"clusterWide": True, "jobs": {"jobNamespaces": [self.job_namespace]}} if cluster_wide else {}
        values = {
            "replicaCount": 0,
            "queue": {"mode": "embedded", "default": {
                "create": True, "name": self.queue,
                "flavors": [{"name": "a100", "nodeLabels": {"nvidia.com/gpu.product": "A100"},
                             "resources": [{"name": "nvidia.com/gpu", "nominal": "8"}]}]}},
            **namespaces,
        }
        values.setdefault("jobs", {}).update(progressIntervalSeconds=2)
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))

    def install(self) -> list[dict[str, Any]]:
        out = self.cluster.helm("install", self.release, str(CHART), "-n", self.namespace, "-f",
                                str(self.tmp / "values.yaml"), "--wait", "--timeout", "2m").stdout
        self.notes = out.split("NOTES:", 1)[1]
        manifest = self.cluster.helm("get", "manifest", self.release, "-n", self.namespace).stdout
        return [doc for doc in yaml.safe_load_all(manifest) if doc]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        out = self.cluster.kubectl(*args, check=False)
        if out.returncode != 0:
            assert "NotFound" in out.stderr, out.stderr
            return None
        return json.loads(out.stdout)

    def job_status(self, name: str) -> dict:
        return ((self.get("finetunejob", name, self.job_namespace) or {}).get("status")) or {}

    def claims(self) -> None:
        self.cluster.apply([
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": self.job_namespace},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "standard",
                      "resources": {"requests": {"storage": "1Gi"}}}}
            for claim in ("models", "data", "finetune-artifacts")
        ])

    def job_manifest(self, name: str) -> dict[str, Any]:
        return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                "metadata": {"name": name, "namespace": self.job_namespace},
                "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"},
                         "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
                         "resources": {"nodes": 1, "gpusPerNode": 1},
                         "evaluation": {"gates": [{"metric": "exact_match", "min": 0.8}]},
                         "serving": {"enabled": False},
                         "queue": {"name": self.queue}}}

    def children(self) -> dict[str, str]:
        """resourceVersion of every object the operator created for jobs in the job namespace."""
        out = self.cluster.kubectl("get", "configmaps,services,jobs,deployments", "-n", self.job_namespace,
                                   "-l", "app.kubernetes.io/managed-by=finetune-operator", "-o", "json")
        return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                for o in json.loads(out.stdout)["items"]}

    def cleanup(self) -> None:
        """Best effort, after a failure too: the shared test cluster must not keep this release's objects."""
        self.cluster.helm("uninstall", self.release, "-n", self.namespace, check=False)
        self.cluster.kubectl("patch", "finetunequeue", self.queue, "--type=merge", "-p",
                             '{"metadata": {"finalizers": null}}', check=False)
        for ns in {self.namespace, self.job_namespace}:
            self.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced-default", "cluster-wide"])
def test_helm_install_runs_a_job_with_the_charts_rbac_and_uninstalls_cleanly(cluster, tmp_path, cluster_wide):
    setup = Install(cluster, tmp_path, cluster_wide)
    operator: ChartOperator | None = None
    try:
        objects = setup.install()
        kinds = {o["kind"] for o in objects}
        assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "FineTuneQueue",
                "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
        assert ("Role" in kinds) != cluster_wide
        if not cluster_wide:
            role = next(o for o in objects if o["kind"] == "Role")
            assert role["metadata"]["namespace"] == setup.namespace  # the release namespace, nothing else
        assert f"rollout status deployment/{setup.release}-finetune-operator" in setup.notes
        assert f'FineTuneQueue "{setup.queue}"' in setup.notes
        assert "kubectl apply --server-side -f charts/finetune-operator/crds/" in setup.notes
        trainer_sa = setup.get("serviceaccount", "finetune-trainer", setup.job_namespace)
        assert trainer_sa["automountServiceAccountToken"] is False

        deployment = setup.get("deployment", f"{setup.release}-finetune-operator", setup.namespace)
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        kubeconfig = cluster.service_account_kubeconfig(setup.namespace, account, tmp_path / "operator.kubeconfig")
        # The API server loads the policies asynchronously: in force before the operator creates anything.
        wait_for("the chart's admission policy refusing the operator's token a foreign Job",
                 lambda: "managedLabels:" in dry_run_create(kubeconfig, foreign_job(setup.job_namespace)).stderr)
        operator = ChartOperator(deployment, kubeconfig, tmp_path / "operator.log").start()

        setup.claims()
        pods = PodDriver(cluster, setup.job_namespace)
        for phase, result in TRAINER_RESULTS.items():
            pods.on(phase, 0, result)
        manifest = setup.job_manifest("chart-job")
        cluster.apply(manifest)
        try:
            done = wait_for("chart-job Succeeded", lambda: setup.job_status("chart-job").get("phase") in {
                "Succeeded", "Failed"} and setup.job_status("chart-job"), timeout=150)
        finally:
            pods.close()
        assert done["phase"] == "Succeeded", (done, operator.log_tail())
        assert done["evaluation"]["passed"] is True and done["observedGeneration"] == 1
        conditions = {c["type"]: c["status"] for c in done["conditions"]}
        assert conditions.get("Admitted") == "True", conditions  # admitted by the chart's FineTuneQueue

        # GitOps: the same manifest applied again changes no child object.
        before = setup.children()
        assert {"ConfigMap/chart-job-config", "Job/chart-job-prepare", "Job/chart-job-train-a0"} <= set(before)
        cluster.apply(manifest)
        time.sleep(6)  # three progress intervals: time for any write the operator would make
        assert setup.children() == before
        assert setup.job_status("chart-job")["phase"] == "Succeeded"

        cluster.kubectl("delete", "finetunejob", "chart-job", "-n", setup.job_namespace, "--timeout=60s")
        operator.stop()  # fails on any Forbidden / NotPermitted in the operator's log
        # In a cluster the operator pod and its RBAC go away together with the release's objects: a
        # finalizer on one of them could never be removed, and the uninstall would hang.
        blocked = {}
        for obj in objects:
            live = setup.get(obj["kind"], obj["metadata"]["name"],
                             None if obj["kind"] in CLUSTER_SCOPED else obj["metadata"].get("namespace"))
            if live and live["metadata"].get("finalizers"):
                blocked[f"{obj['kind']}/{obj['metadata']['name']}"] = live["metadata"]["finalizers"]
        assert not blocked, f"the operator leaves finalizers on the chart's objects: {blocked}"

        setup.cluster.helm("uninstall", setup.release, "-n", setup.namespace, "--wait", "--timeout", "2m")
        left = [f"{o['kind']}/{o['metadata']['name']}" for o in objects
                if setup.get(o["kind"], o["metadata"]["name"],
                             None if o["kind"] in CLUSTER_SCOPED else o["metadata"].get("namespace", setup.namespace))]
        assert not left, f"helm uninstall left {left}"
        assert setup.get("crd", "finetunejobs.finetune.dev") is not None
        assert setup.get("crd", "finetunequeues.finetune.dev") is not None
    finally:
        if operator is not None:
            operator.kill()
        setup.cleanup()

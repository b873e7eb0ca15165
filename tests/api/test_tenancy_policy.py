"""The chart's RBAC and ValidatingAdmissionPolicies on the real API server: the default install is
namespaced, every child the operator renders is admitted when its own ServiceAccount creates it, and each
attack on a shared cluster is refused with the rule's name in the message (docs/install.md, "Attacks and
where they are refused").

Attacks go through `kubectl create --dry-run=server`: admission (RBAC, CEL, the policies) runs in full and
nothing is stored.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from finetune_api import FineTuneJob
from finetune_operator.builders.render import render_job
from finetune_operator.settings import OperatorSettings
from tests.harness.cluster import KUBECTL, Cluster
from tests.harness.operator import wait_for
from tests.unit.chart.chart import CHART

pytestmark = pytest.mark.api

FOREIGN_IMAGE = "docker.io/library/busybox:1.36"


@dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str
    other_namespace: str
    operator_kubeconfig: str

    def create(self, obj: dict[str, Any], *, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
        """Server-side dry-run create, as the operator (default) or as the cluster admin."""
        kubeconfig = kubeconfig or self.operator_kubeconfig
        return subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "create", "--dry-run=server", "-o", "name",
                               "-f", "-"], input=json.dumps(obj), capture_output=True, text=True, timeout=60)

    def as_user(self, obj: dict[str, Any]) -> subprocess.CompletedProcess:
        return self.create(obj, kubeconfig=self.cluster.kubeconfig)

    def can_i(self, *args: str) -> bool:
        out = subprocess.run([KUBECTL, "--kubeconfig", self.operator_kubeconfig, "auth", "can-i", *args],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() == "yes"


def job_manifest(namespace: str, name: str = "policy-job", **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": "pvc://models/tiny", "name": "tiny"},
                 "datasets": {"train": {"uri": "pvc://data/train.jsonl"}},
                 "resources": {"nodes": 2, "gpusPerNode": 1},
                 "evaluation": {"gates": [{"metric": "exact_match", "min": 0.5}]},
                 "serving": {"enabled": True}},
    }
    manifest["spec"].update(spec)
    return manifest


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart with its defaults (0 replicas: no container runtime here) in its own namespace."""
    suffix = uuid.uuid4().hex[:5]
    name = f"ft{suffix}"
    namespace = cluster.create_namespace(f"ft{suffix}-team")
    other = cluster.create_namespace(f"ft{suffix}-other")
    tmp = tmp_path_factory.mktemp("policy")
    # The team's own rules (policy.namespaces): at most 8 GPUs per job, one priority class, GPU taints
    # only, no node selector of its own, its own claims (and the artifacts claim) only.
    values = tmp / "values.yaml"
    values.write_text(json.dumps({"replicaCount": 0, "policy": {"namespaces": {namespace: {
        "maxGpusPerJob": 8, "priorityClasses": ["batch"], "tolerationKeys": ["nvidia.com/gpu"], "nodeSelectorKeys": [],
        "claims": ["models", "data"]}}}}))
    try:
        cluster.helm("install", name, str(CHART), "-n", namespace, "-f", str(values), "--wait", "--timeout", "2m")
        kubeconfig = cluster.service_account_kubeconfig(namespace, f"{name}-finetune-operator", tmp / "operator")
        setup = Release(cluster, name, namespace, other, kubeconfig)
        # The API server loads a new policy asynchronously: wait until it refuses what it must refuse.
        foreign = job_manifest(namespace, trainerImage=FOREIGN_IMAGE)
        wait_for("the chart's admission policies in force", lambda: "allowedImages" in setup.as_user(foreign).stderr)
        yield setup
    finally:
        cluster.helm("uninstall", name, "-n", namespace, check=False)
        for ns in (namespace, other):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def rendered_children(namespace: str) -> list[dict[str, Any]]:
    """The Jobs and Deployments the operator creates for a multi-node job with serving and a base model in
    object storage (so its source-cache release Job too), from its own builders."""
    job = FineTuneJob.model_validate(job_manifest(namespace, model={"uri": "s3://models/tiny", "name": "tiny"}))
    phases = render_job(job, OperatorSettings(watch_namespaces=[namespace]))
    return [o for objects in phases.values() for o in objects if o["kind"] in {"Job", "Deployment"}]


def a_child(release: Release) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in rendered_children(release.namespace) if o["kind"] == "Job"))


def test_every_child_the_operator_renders_is_admitted_under_the_policy(release: Release) -> None:
    children = rendered_children(release.namespace)
    assert {o["kind"] for o in children} == {"Job", "Deployment"}
    assert "policy-job-release" in {o["metadata"]["name"] for o in children}
    for child in children:
        out = release.create(child)
        assert out.returncode == 0, (child["metadata"]["name"], out.stderr)


def test_the_default_install_reaches_only_its_own_namespace(release: Release) -> None:
    child = a_child(release)
    child["metadata"]["namespace"] = release.other_namespace
    out = release.create(child)
    assert out.returncode != 0 and "Forbidden" in out.stderr and "cannot create resource \"jobs\"" in out.stderr
    assert release.can_i("create", "jobs.batch", "-n", release.namespace)
    assert not release.can_i("list", "pods", "-n", release.other_namespace)
    assert not release.can_i("get", "pods", "--subresource=log", "-n", release.other_namespace)
    assert not release.can_i("create", "pods", "-n", release.namespace)
    assert not release.can_i("get", "secrets", "-n", release.namespace)
    assert not release.can_i("watch", "workloads.kueue.x-k8s.io", "-n", release.namespace)  # embedded mode
    assert not release.can_i("patch", "clusterkopfpeerings.kopf.dev")  # one replica: no peering
    # blockOwnerDeletion on the children (OwnerReferencesPermissionEnforcement)
    assert release.can_i("update", "finetunejobs.finetune.dev", "--subresource=finalizers", "-n", release.namespace)


def _with_image(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["containers"][0]["image"] = FOREIGN_IMAGE


def _privileged(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True)


def _added_capability(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_RAW"]


def _host_network(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["hostNetwork"] = True


def _host_path(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})


def _other_account(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["serviceAccountName"] = "default"


def _token_mounted(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _unlabelled(child: dict[str, Any]) -> None:
    del child["metadata"]["labels"]["app.kubernetes.io/managed-by"]


def _control_plane_toleration(child: dict[str, Any]) -> None:
    child["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize(("attack", "rule"), [
    (_with_image, f"allowedImages: image {FOREIGN_IMAGE} is not in the chart policy"),
    (_privileged, "unprivileged:"),
    (_added_capability, "unprivileged:"),
    (_host_network, "noHostAccess:"),
    (_host_path, "noHostAccess:"),
    (_other_account, "jobServiceAccount: pods run as ServiceAccount finetune-trainer"),
    (_token_mounted, "jobServiceAccount:"),
    (_unlabelled, "managedLabels:"),
    (_control_plane_toleration, "tolerations:"),
], ids=["foreign-image", "privileged", "added-capability", "host-network", "host-path", "other-account",
        "token-mounted", "unlabelled", "control-plane-toleration"])
def test_a_stolen_operator_token_cannot_run_anything_else(release: Release, attack, rule: str) -> None:
    child = a_child(release)
    attack(child)
    out = release.create(child)
    assert out.returncode != 0, f"{attack.__name__} was admitted"
    assert f"ValidatingAdmissionPolicy '{release.name}-finetune-operator-children'" in out.stderr, out.stderr
    assert rule in out.stderr, out.stderr


@pytest.mark.parametrize(("spec", "rule"), [
    ({"trainerImage": FOREIGN_IMAGE}, f"allowedImages: image {FOREIGN_IMAGE} is not in the chart policy"),
    ({"serving": {"enabled": True, "image": FOREIGN_IMAGE}}, f"allowedImages: image {FOREIGN_IMAGE}"),
    ({"evaluation": {"graders": [{"name": "exfil", "type": "python",
                                  "source": "def grade(output, item):\n    return 1.0\n"}]}},
     "pythonGraders: python graders (and GRPO rewards) are not allowed here"),
    ({"resources": {"nodes": 1, "gpusPerNode": 1, "tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}},
     "tolerations: a job may not tolerate every taint"),
    ({"resources": {"nodes": 1, "gpusPerNode": 1, "tolerations": [{"operator": "Exists"}]}},
     "tolerations: a job may not tolerate every taint"),
], ids=["trainer-image", "serving-image", "python-grader", "control-plane-toleration", "tolerate-everything"])
def test_a_job_outside_the_admin_policy_is_refused_at_admission(release: Release, spec: dict, rule: str) -> None:
    out = release.as_user(job_manifest(release.namespace, **spec))
    assert out.returncode != 0, f"{spec} was admitted"
    assert f"ValidatingAdmissionPolicy '{release.name}-finetune-operator-jobs'" in out.stderr, out.stderr
    assert rule in out.stderr, out.stderr


@pytest.mark.parametrize(("spec", "rule"), [
    ({"resources": {"nodes": 3, "gpusPerNode": 4}}, "namespaces.{ns}.maxGpusPerJob: a job in {ns} may use at most 8 GPUs"),
    ({"queue": {"priorityClass": "production"}}, "namespaces.{ns}.priorityClasses: spec.queue.priorityClass must be one of [batch]"),
    ({"resources": {"nodes": 1, "gpusPerNode": 1, "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "team-b", "effect": "NoSchedule"}]}},
     "namespaces.{ns}.tolerationKeys: a job in {ns} may tolerate only [nvidia.com/gpu]"),
    ({"resources": {"nodes": 1, "gpusPerNode": 1, "nodeSelector": {"pool": "team-b"}}},
     "namespaces.{ns}.nodeSelectorKeys: a job in {ns} may select nodes only by []"),
    ({"datasets": {"train": {"uri": "pvc://data/train.jsonl"}, "eval": {"uri": "pvc://team-b-data/heldout.jsonl"}}},
     "namespaces.{ns}.claims: team-b-data is not a claim jobs in {ns} may mount (models, data, finetune-artifacts)"),
], ids=["gpus-per-job", "priority-class", "another-teams-taint", "another-teams-nodes", "another-teams-claim"])
def test_a_namespaces_own_rules_refuse_what_they_do_not_allow(release: Release, spec: dict, rule: str) -> None:
    out = release.as_user(job_manifest(release.namespace, **spec))
    assert out.returncode != 0, f"{spec} was admitted"
    assert rule.format(ns=release.namespace) in out.stderr, out.stderr


def test_a_job_within_its_namespaces_rules_is_admitted(release: Release) -> None:
    within = job_manifest(release.namespace, queue={"priorityClass": "batch"}, resources={
        "nodes": 2, "gpusPerNode": 4, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]})
    out = release.as_user(within)
    assert out.returncode == 0, out.stderr


def test_output_is_confined_to_the_jobs_own_directory(release: Release) -> None:
    ns = release.namespace
    own = release.as_user(job_manifest(ns, output={"uri": f"pvc://finetune-artifacts/{ns}/policy-job"}))
    assert own.returncode == 0, own.stderr
    # Same job name, another namespace's directory of the shared claim: the CRD's own rule (last element
    # is the job's name) lets it through, the chart's policy does not.
    other = release.as_user(job_manifest(ns, output={"uri": f"pvc://finetune-artifacts/{release.other_namespace}/policy-job"}))
    assert other.returncode != 0
    assert f"outputPath: spec.output.uri must be pvc://<claim>/{ns}/policy-job" in other.stderr, other.stderr
    # Another job's directory is refused by the CRD itself (issue 14).
    into = release.as_user(job_manifest(ns, output={"uri": f"pvc://finetune-artifacts/{ns}/someone-else"}))
    assert into.returncode != 0 and "output.uri must be the job's own directory" in into.stderr, into.stderr


def test_the_policy_leaves_other_namespaces_to_their_own_admins(release: Release) -> None:
    """A namespaced install polices the namespaces it watches, not the rest of the cluster."""
    out = release.as_user(job_manifest(release.other_namespace, trainerImage=FOREIGN_IMAGE))
    assert out.returncode == 0, out.stderr
    own = release.as_user(job_manifest(release.namespace))
    assert own.returncode == 0 and own.stdout.strip() == "finetunejob.finetune.dev/policy-job", own.stderr

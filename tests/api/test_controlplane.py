"""Checks of the test control plane itself (DESIGN.md §8, docs/controlplane.md): the real
apiserver/controllers/scheduler, kwok GPU nodes, the local pod runner and RBAC."""

from __future__ import annotations

import ipaddress
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.harness.cluster import (
    GPU_RESOURCE,
    KWOK_EXIT_CODE,
    KWOK_TERMINATION_MESSAGE,
    ClusterError,
    wait_for,
)
from tests.harness.operator import free_port
from tests.harness.podrunner import POD_IP

pytestmark = pytest.mark.api


def _get(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _job(name: str, pod_spec: dict, *, annotations: dict | None = None, owner: dict | None = None,
         completions: int = 1) -> dict:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "completions": completions,
            "parallelism": completions,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", **pod_spec},
            },
        },
    }
    if owner:
        job["metadata"]["ownerReferences"] = [owner]
    return job


def _job_condition(cluster, namespace: str, name: str) -> str | None:
    job = _get(cluster, "job", name, "-n", namespace)
    for c in job.get("status", {}).get("conditions", []) or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c["type"]
    return None


def _terminated(cluster, namespace: str, job: str) -> dict:
    pods = _get(cluster, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]["status"]["containerStatuses"][0]["state"]["terminated"] | {
        "_node": pods[0]["spec"]["nodeName"], "_pod": pods[0]["metadata"]["name"]}


def test_gpu_nodes_have_gpu_capacity(cluster):
    if cluster.external and not cluster.gpu_nodes:
        pytest.skip("existing cluster without kwok GPU nodes (label type=kwok)")
    out = cluster.kubectl("get", "nodes", "-o", "wide").stdout
    nodes = {n["metadata"]["name"]: n for n in _get(cluster, "nodes", "-l", "type=kwok")["items"]}
    assert len(nodes) >= 2, out
    for name, node in nodes.items():
        assert name in out
        assert node["status"]["capacity"][GPU_RESOURCE] == "8"
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "A100"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", (name, node["status"]["conditions"])
    # custom columns through real kubectl, as a person would look at them
    cols = cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o",
                           "custom-columns=NAME:.metadata.name,GPU:.status.capacity.nvidia\\.com/gpu").stdout
    assert all(line.split()[1] == "8" for line in cols.strip().splitlines()[1:]), cols


CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.cptest.finetune.dev
    spec:
      group: cptest.finetune.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
      - name: v1
        served: true
        storage: true
        subresources: {status: {}}
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                required: [replicas, maxReplicas]
                properties:
                  replicas: {type: integer}
                  maxReplicas: {type: integer}
                x-kubernetes-validations:
                - rule: self.replicas <= self.maxReplicas
                  message: replicas must not exceed maxReplicas
              status:
                type: object
                properties:
                  phase: {type: string}
""")


def _widget(name: str, replicas: int, max_replicas: int) -> str:
    return yaml.safe_dump({"apiVersion": "cptest.finetune.dev/v1", "kind": "Widget", "metadata": {"name": name},
                           "spec": {"replicas": replicas, "maxReplicas": max_replicas}})


def test_crd_cel_validation_and_status_pruning(cluster, namespace):
    cluster.apply(CRD)
    try:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.cptest.finetune.dev")
        # discovery may lag a moment behind Established
        wait_for(lambda: cluster.kubectl("create", "-n", namespace, "-f", "-", input=_widget("ok", 1, 2),
                                         check=False).returncode == 0, 30, what="valid Widget accepted")

        bad = cluster.kubectl("create", "-n", namespace, "-f", "-", input=_widget("bad", 3, 2), check=False)
        assert bad.returncode != 0
        assert "replicas must not exceed maxReplicas" in bad.stderr, bad.stderr
        assert cluster.kubectl("get", "widget", "bad", "-n", namespace, check=False).returncode != 0

        cluster.kubectl("patch", "widget", "ok", "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"phase": "Ready", "notInSchema": "dropped"}}))
        status = _get(cluster, "widget", "ok", "-n", namespace)["status"]
        assert status == {"phase": "Ready"}, status
    finally:
        cluster.kubectl("delete", "crd", "widgets.cptest.finetune.dev", "--wait=false", check=False)


def test_garbage_collector_deletes_job_of_deleted_owner(cluster, namespace):
    cm = json.loads(cluster.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm["metadata"]["uid"]}
    job = _job("owned", {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}, owner=owner)
    job["metadata"]["namespace"] = namespace
    cluster.apply(job)
    assert _get(cluster, "job", "owned", "-n", namespace)["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: cluster.kubectl("get", "job", "owned", "-n", namespace, check=False).returncode != 0,
             90, what="garbage collection of job owned")


def test_kwok_job_pod_fails_with_annotated_exit_code(cluster, namespace):
    if cluster.external and not cluster.gpu_nodes:
        pytest.skip("needs kwok nodes")
    job = _job("kwok-fail", {"containers": [{"name": "main", "image": "busybox", "command": ["false"],
                                             "resources": {"limits": {GPU_RESOURCE: "1"}}}]},
               annotations={KWOK_EXIT_CODE: "1", KWOK_TERMINATION_MESSAGE: '{"error": "bad data"}'})
    job["metadata"]["namespace"] = namespace
    cluster.apply(job)
    assert wait_for(lambda: _job_condition(cluster, namespace, "kwok-fail"), 60, what="job kwok-fail finished") \
        == "Failed"
    term = _terminated(cluster, namespace, "kwok-fail")
    assert term["_node"] in cluster.gpu_nodes
    assert term["exitCode"] == 1
    assert term["reason"] == "Error"
    assert json.loads(term["message"]) == {"error": "bad data"}
    phase = _get(cluster, "pod", term["_pod"], "-n", namespace)["status"]["phase"]
    assert phase == "Failed"


def test_local_runner_runs_job_for_real(cluster, local_runner, namespace):
    program = (
        "import os, pathlib, sys\n"
        "print(1)\n"
        "print(sys.executable, file=sys.stderr)\n"
        "pathlib.Path('/workspace/out.txt').write_text(os.environ['POD_NAME'])\n"
        "open('/dev/termination-log', 'w').write('{\"pod\": \"%s\", \"mode\": \"%s\"}'"
        " % (os.environ['POD_NAME'], os.environ['MODE']))\n"
    )
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=mode=real")
    pod_spec = {
        "nodeSelector": local_runner.node_selector,
        "tolerations": local_runner.tolerations,
        "containers": [{
            "name": "main",
            "image": "python:3.11",
            "command": ["python", "-c", program],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            ],
            "volumeMounts": [{"name": "ws", "mountPath": "/workspace"}],
        }],
        "volumes": [{"name": "ws", "emptyDir": {}}],
    }
    job = _job("runner-ok", pod_spec)
    job["metadata"]["namespace"] = namespace
    cluster.apply(job)
    assert wait_for(lambda: _job_condition(cluster, namespace, "runner-ok"), 90,
                    what="job runner-ok finished") == "Complete"
    term = _terminated(cluster, namespace, "runner-ok")
    assert term["_node"] == local_runner.node_name
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert json.loads(term["message"]) == {"pod": term["_pod"], "mode": "real"}
    out = local_runner.logs(namespace, term["_pod"]).split()  # stdout and stderr, in any order
    assert "1" in out, out
    # `python` in a container command is the runner's (the repo venv's) python
    assert [Path(line).parent for line in out if line != "1"] == [Path(sys.executable).parent], out
    ws = local_runner.pod_dir(namespace, term["_pod"]) / "volumes" / "ws" / "out.txt"
    assert ws.read_text() == term["_pod"]

    # a real non-zero exit code and message, reported as a failed Job
    failing = _job("runner-fail", {**pod_spec, "containers": [{
        "name": "main", "image": "python:3.11",
        "command": ["python", "-c", "import sys; open('/dev/termination-log','w').write('boom'); sys.exit(3)"]}],
        "volumes": []})
    failing["metadata"]["namespace"] = namespace
    cluster.apply(failing)
    assert wait_for(lambda: _job_condition(cluster, namespace, "runner-fail"), 90,
                    what="job runner-fail finished") == "Failed"
    term = _terminated(cluster, namespace, "runner-fail")
    assert (term["exitCode"], term["reason"], term["message"]) == (3, "Error", "boom")


def test_service_account_token_is_limited_by_rbac(cluster, namespace, tmp_path):
    cluster.kubectl("create", "serviceaccount", "narrow", "-n", namespace)
    cluster.kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list,create", "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "narrow-cm-reader", "-n", namespace, "--role=cm-reader",
                    f"--serviceaccount={namespace}:narrow")
    kubeconfig = cluster.service_account_kubeconfig(namespace, "narrow", tmp_path / "narrow.kubeconfig")

    def as_sa(*args: str, check: bool = True):
        return cluster._run(["kubectl", "--kubeconfig", kubeconfig, *args], None, check, 60)

    assert as_sa("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == \
        f"system:serviceaccount:{namespace}:narrow"
    as_sa("create", "configmap", "made-by-sa", "-n", namespace)
    assert "made-by-sa" in as_sa("get", "configmaps", "-n", namespace).stdout

    denied = as_sa("get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    denied = as_sa("get", "configmaps", "-n", "default", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    denied = as_sa("delete", "configmap", "made-by-sa", "-n", namespace, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    assert as_sa("auth", "can-i", "list", "configmaps", "-n", namespace).stdout.strip() == "yes"
    assert as_sa("auth", "can-i", "list", "pods", "-n", namespace, check=False).stdout.strip() == "no"

    # the same token through the Python client (how the operator authenticates)
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    assert "made-by-sa" in [c.metadata.name for c in api.list_namespaced_config_map(namespace).items]
    with pytest.raises(client.ApiException) as exc:
        api.list_namespaced_secret(namespace)
    assert exc.value.status == 403


def test_cluster_helpers_raise_with_stderr(cluster):
    with pytest.raises(ClusterError, match="NotFound|not found"):
        cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default")


def test_local_runner_deployment_readiness_and_graceful_delete(cluster, local_runner, namespace):
    port = free_port()
    server = (
        "import http.server, os, signal, sys, time\n"
        "def bye(*a):\n"
        "    open('/data/terminated', 'w').write('sigterm'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(1.5)  # not ready at once\n"
        f"http.server.HTTPServer(('', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "shared", "namespace": namespace},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": local_runner.node_selector,
                    "tolerations": local_runner.tolerations,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "web", "image": "python:3.11", "command": ["python", "-c", server],
                        "ports": [{"name": "http", "containerPort": port}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
                },
            },
        },
    }
    cluster.apply(deploy)
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s", timeout=100)
    pod = _get(cluster, "pods", "-n", namespace, "-l", "app=web")["items"][0]
    assert pod["spec"]["nodeName"] == local_runner.node_name
    pod_ip = pod["status"]["podIP"]
    if local_runner.bridge:  # its own address on the node's pod bridge
        assert ipaddress.ip_address(pod_ip) in local_runner.bridge.network and pod_ip != local_runner.host_address
    else:  # the host's address: EndpointSlices refuse loopback
        assert pod_ip == POD_IP
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True", pod["status"]
    import urllib.request

    with urllib.request.urlopen(f"http://{pod_ip}:{port}/", timeout=5) as resp:
        assert resp.status == 200

    # an Indexed Job shares the PVC with the Deployment: both see the same directory
    job = _job("indexed", {
        "nodeSelector": local_runner.node_selector,
        "tolerations": local_runner.tolerations,
        "containers": [{
            "name": "main", "image": "python:3.11",
            "command": ["python", "-c",
                        "import os; open('/data/index-' + os.environ['JOB_COMPLETION_INDEX'], 'w').write('x')"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
    }, completions=2)
    job["spec"]["completionMode"] = "Indexed"
    job["metadata"]["namespace"] = namespace
    cluster.apply(job)
    assert wait_for(lambda: _job_condition(cluster, namespace, "indexed"), 90, what="indexed job") == "Complete"
    pvc = _get(cluster, "pvc", "shared", "-n", namespace)
    pv = _get(cluster, "pv", pvc["spec"]["volumeName"])
    shared = Path(pv["spec"]["hostPath"]["path"])
    assert sorted(p.name for p in shared.iterdir()) == ["index-0", "index-1"]

    # deleting the pod sends SIGTERM to the process (its handler writes a file) and the pod goes away
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=true", timeout=60)
    assert (shared / "terminated").read_text() == "sigterm"
    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")

"""The Node `local-runner`: scheduling constants, its address, and its registration, status heartbeat and
Lease (kwok does not manage it, so the runner keeps it Ready itself)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from .clock import now, now_micro

NODE_NAME = "local-runner"
RUNNER_LABEL = "finetune.dev/local-runner"
TAINT = {"key": RUNNER_LABEL, "value": "true", "effect": "NoSchedule"}
NODE_SELECTOR = {RUNNER_LABEL: "true"}
TOLERATIONS = [{"key": RUNNER_LABEL, "operator": "Exists", "effect": "NoSchedule"}]


def _host_ip() -> str:
    """This machine's primary address, the node's and every pod's when there is no pod network (cni.py):
    EndpointSlices refuse loopback addresses; 127.0.0.1 when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


POD_IP = _host_ip()


def pod_spec_for_runner(pod_spec: dict) -> dict:
    """Return a copy of a pod spec (dict) that schedules onto the local runner."""
    spec = dict(pod_spec)
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **NODE_SELECTOR}
    spec["tolerations"] = list(spec.get("tolerations") or []) + TOLERATIONS
    return spec


class NodeAgent:
    """Registers the node and keeps it Ready: Lease renewals, and status heartbeats every third one."""

    def __init__(self, core: Any, coord: Any, node_name: str, capacity: dict[str, str], labels: dict[str, str],
                 kubelet_port: int, address: str, pod_cidr: str | None) -> None:
        self.core = core
        self.coord = coord
        self.node_name = node_name
        self.capacity = capacity
        self.labels = labels
        self.kubelet_port = kubelet_port
        self.address = address
        self.pod_cidr = pod_cidr

    def node_object(self) -> dict:
        conds = [
            ("Ready", "True", "KubeletReady", "local pod runner is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            ("NetworkUnavailable", "False", "RouteCreated", "ok"),
        ]
        t = now()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", RUNNER_LABEL: "true", "type": "local-runner", **self.labels,
                },
            },
            "spec": {"taints": [TAINT], **({"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]} if self.pod_cidr else {})},
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [{"type": a, "status": b, "reason": c, "message": d, "lastHeartbeatTime": t,
                                "lastTransitionTime": t} for a, b, c, d in conds],
                # InternalIP only: the apiserver reaches the kubelet log endpoint (kubelet_logs) at the first of its
                # preferred address types, Hostname first, and the name `local-runner` resolves nowhere
                "addresses": [{"type": "InternalIP", "address": self.address}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.34.3-local-runner",
                             "containerRuntimeVersion": "local://processes", "kernelVersion": os.uname().release,
                             "osImage": "local pod runner", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                             "bootID": ""},
                "phase": "Running",
            },
        }

    def register(self) -> None:
        from kubernetes.client.rest import ApiException

        node = self.node_object()
        try:
            self.core.create_node(node)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(self.node_name, {"metadata": {"labels": node["metadata"]["labels"]},
                                                  "spec": {"taints": [TAINT], "unschedulable": False}})
        self.heartbeat_status()
        self.renew_lease()

    def heartbeat_status(self) -> None:
        st = self.node_object()["status"]
        self.core.patch_node_status(self.node_name, {"status": {k: st[k] for k in
                                                                ("conditions", "capacity", "allocatable", "addresses",
                                                                 "nodeInfo", "daemonEndpoints")}})

    def renew_lease(self) -> None:
        from kubernetes.client.rest import ApiException

        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.coord.patch_namespaced_lease(self.node_name, "kube-node-lease", {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            node_uid = json.loads(self.core.read_node(self.node_name, _preload_content=False).data)["metadata"]["uid"]
            self.coord.create_namespaced_lease("kube-node-lease", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                                                  "uid": node_uid}]},
                "spec": spec,
            })

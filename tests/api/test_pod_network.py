"""The local pod runner gives pods a network identity as a kubelet and a CNI would, and the cluster DNS
(real CoreDNS with its kubernetes plugin) resolves their names: two pods of an Indexed Job behind a
headless Service find each other by `<hostname>.<subdomain>` and talk over TCP; a ClusterIP Service
name resolves to its ClusterIP, and with the pod bridge the runner's Service proxy forwards a connection
to it to the Service's ready endpoint (podrunner/serviceproxy.py); each pod sees its own hostname, kubelet-managed /etc/hosts and a
resolv.conf that names the cluster DNS (tests/harness/podrunner/network.py). With the node's pod bridge
(podrunner/cni.py) each pod has an address of its own in the bridge's subnet and both listen on the same
port; the cluster DNS answers at the node's address on the bridge."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest

from tests.harness.cluster import wait_for

pytestmark = pytest.mark.api

# Pod 0 serves one line on PORT at the address its own hostname resolves to (/etc/hosts); pod 1 waits for
# the cluster DNS to publish pod 0's name, then sends a line and prints the reply. Both print what they
# see of their identity as one JSON line.
PROGRAM = """
import json, os, socket, time
index = int(os.environ["JOB_COMPLETION_INDEX"])
port = int(os.environ["PORT"])
peer = f"peers-0.{os.environ['SUBDOMAIN']}"
me = {"index": index, "hostname": socket.gethostname(), "own_ip": socket.gethostbyname(socket.gethostname()),
      "fqdn": socket.getfqdn(), "resolv": open("/etc/resolv.conf").read(), "hosts": open("/etc/hosts").read()}
own_network = os.environ["OWN_NETWORK"] == "1"
if index == 0:  # pod 1 comes by name, then (with the runner's Service proxy) through the ClusterIP Service
    srv = socket.create_server((me["own_ip"], port))
    me["received"] = []
    for _ in range(2 if own_network else 1):
        conn, _ = srv.accept()
        me["received"].append(conn.recv(100).decode())
        conn.sendall(b"pong from " + socket.gethostname().encode())
        conn.close()
else:
    if own_network:  # the same port as pod 0's server, on this pod's own address
        held = socket.create_server((me["own_ip"], port))
    deadline = time.monotonic() + 60

    def exchange(host, line, port, timeout):  # retried until the name and its route exist
        while True:
            try:
                with socket.create_connection((host, port), timeout=timeout) as c:
                    c.sendall(line)
                    return c.recv(100).decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    me["reply"] = exchange(peer, b"ping from " + socket.gethostname().encode(), port, 5)
    me["peer_ip"] = socket.gethostbyname(peer)
    me["service_ip"] = socket.gethostbyname(os.environ["CLUSTERIP_SERVICE"])
    if own_network:  # the proxy routes the ClusterIP once pod 0's endpoint is ready
        me["service_reply"] = exchange(os.environ["CLUSTERIP_SERVICE"], b"ping via the service", 80, 2)
print("IDENTITY " + json.dumps(me), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_indexed_job_pods_resolve_each_other_through_the_cluster_dns(cluster, local_runner, namespace):
    port = _free_port()
    labels = {"app": "peers"}
    cluster.apply([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers", "namespace": namespace},
         "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "p", "port": port}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": {**labels, "batch.kubernetes.io/job-completion-index": "0"},
                  "ports": [{"name": "http", "port": 80, "targetPort": port}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "peers", "namespace": namespace},
         "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "subdomain": "peers", "restartPolicy": "Never",
                      "nodeSelector": local_runner.node_selector, "tolerations": local_runner.tolerations,
                      "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", PROGRAM],
                                      "env": [{"name": "PORT", "value": str(port)},
                                              {"name": "SUBDOMAIN", "value": "peers"},
                                              {"name": "CLUSTERIP_SERVICE", "value": "web"},
                                              {"name": "OWN_NETWORK", "value": "1" if local_runner.bridge else "0"}]}]}}}},
    ])

    def complete() -> str | None:
        job = json.loads(cluster.kubectl("get", "job", "peers", "-n", namespace, "-o", "json").stdout)
        done = [c["type"] for c in job["status"].get("conditions") or [] if c["status"] == "True"
                and c["type"] in ("Complete", "Failed")]
        return done[0] if done else None

    result = wait_for(complete, 120, what="job peers finished")
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=peers", "-o", "json").stdout)["items"]
    seen = {}
    for pod in pods:
        log = local_runner.logs(namespace, pod["metadata"]["name"])
        print(f"--- {pod['metadata']['name']} (podIP {pod['status'].get('podIP')})\n{log}")
        line = next(x for x in log.splitlines() if x.startswith("IDENTITY "))
        seen[pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]] = (pod, json.loads(line[9:]))
    assert result == "Complete"
    (pod0, me0), (pod1, me1) = seen["0"], seen["1"]
    fqdn0 = f"peers-0.peers.{namespace}.svc.cluster.local"
    assert me0["hostname"] == "peers-0" and me1["hostname"] == "peers-1"
    assert me0["fqdn"] == fqdn0
    assert me0["own_ip"] == pod0["status"]["podIP"] and me1["own_ip"] == pod1["status"]["podIP"]
    assert f"{pod0['status']['podIP']}\t{fqdn0}\tpeers-0" in me0["hosts"].splitlines()
    assert me1["resolv"].splitlines() == [
        f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local",
        f"nameserver {local_runner.dns.address}",
        "options ndots:5",
    ]
    # pod 1 found pod 0 by name through CoreDNS, and they talked
    assert me1["peer_ip"] == pod0["status"]["podIP"]
    assert me0["received"][0] == "ping from peers-1" and me1["reply"] == "pong from peers-0"
    web = json.loads(cluster.kubectl("get", "service", "web", "-n", namespace, "-o", "json").stdout)
    assert me1["service_ip"] == web["spec"]["clusterIP"]
    if local_runner.bridge:  # the runner's Service proxy forwarded web's ClusterIP:80 to pod 0's port
        assert me0["received"][1] == "ping via the service" and me1["service_reply"] == "pong from peers-0"
        forwarded = (f"service proxy: {namespace}/web {me1['service_ip']}:80: connection from "
                     f"{pod1['status']['podIP']}:")
        line = next((x for x in local_runner.log_file.read_text().splitlines() if forwarded in x), None)
        assert line and line.endswith(f"forwarded to {pod0['status']['podIP']}:{port}"), forwarded
    if local_runner.bridge:  # addresses of their own on the node's pod bridge, published in the EndpointSlice
        ips = {pod0["status"]["podIP"], pod1["status"]["podIP"]}
        assert len(ips) == 2 and all(ipaddress.ip_address(a) in local_runner.bridge.network for a in ips), ips
        assert local_runner.host_address not in ips and local_runner.dns.address == local_runner.host_address

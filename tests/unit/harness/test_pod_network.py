"""The local pod runner's kubelet files: /etc/hosts and resolv.conf per the pod's spec (dnsPolicy,
dnsConfig, hostname, subdomain, hostAliases). The api tier proves them inside running pods
(tests/api/test_pod_network.py); these cover the policies that test does not run."""

from __future__ import annotations

import pytest

from tests.harness.podrunner import network

pytestmark = pytest.mark.unit


def pod(**spec) -> dict:
    return {"metadata": {"name": "train-0-abcde", "namespace": "team"}, "spec": spec}


def test_hostname_and_fqdn_follow_hostname_and_subdomain() -> None:
    assert network.pod_hostname(pod()) == ("train-0-abcde", None)
    assert network.pod_hostname(pod(hostname="train-0", subdomain="train")) == (
        "train-0", "train-0.train.team.svc.cluster.local")
    assert network.pod_hostname(pod(hostname="x" * 70))[0] == "x" * 63


def test_hosts_file_lists_the_pod_names_then_host_aliases() -> None:
    spec = pod(hostname="train-0", subdomain="train", hostAliases=[{"ip": "10.1.2.3", "hostnames": ["a", "b"]}])
    lines = network.hosts_file(spec, "train-0", "train-0.train.team.svc.cluster.local", pod_ip="10.0.0.7").splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file." and "127.0.0.1\tlocalhost" in lines
    assert "10.0.0.7\ttrain-0.train.team.svc.cluster.local\ttrain-0" in lines
    assert lines[-1] == "10.1.2.3\ta\tb"


def test_resolv_conf_per_dns_policy(tmp_path, monkeypatch) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 10.255.0.1\nsearch corp.example\noptions timeout:2\n")
    monkeypatch.setattr(network, "HOST_RESOLV_CONF", host)
    assert network.resolv_conf(pod(), "127.53.0.9").splitlines() == [
        "search team.svc.cluster.local svc.cluster.local cluster.local", "nameserver 127.53.0.9", "options ndots:5"]
    assert network.resolv_conf(pod(dnsPolicy="Default"), "127.53.0.9").splitlines() == [
        "search corp.example", "nameserver 10.255.0.1", "options timeout:2"]
    none = pod(dnsPolicy="None", dnsConfig={"nameservers": ["10.9.9.9"], "searches": ["a.example"],
                                              "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert network.resolv_conf(none, "127.53.0.9").splitlines() == [
        "search a.example", "nameserver 10.9.9.9", "options ndots:2 edns0"]
    # ClusterFirst without a cluster DNS falls back to the node's, as a kubelet without clusterDNS does
    assert "nameserver 10.255.0.1" in network.resolv_conf(pod(), None).splitlines()

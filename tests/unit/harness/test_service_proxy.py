"""Which Service ports the local runner's Service proxy routes, and to which endpoints
(tests/harness/podrunner/serviceproxy.py). Listening and forwarding are proven on the runner by
tests/api/test_pod_network.py and tests/e2e/test_multinode_resume.py."""

from __future__ import annotations

import ipaddress

import pytest

from tests.harness.podrunner.serviceproxy import Route, routes

pytestmark = pytest.mark.unit

POD_NETWORK = ipaddress.IPv4Network("10.213.7.0/24")


def service(name: str, cluster_ip: str, *ports: dict, selector: dict | None = None) -> dict:
    return {"metadata": {"namespace": "team", "name": name},
            "spec": {"clusterIP": cluster_ip, "selector": {"app": name} if selector is None else selector,
                     "ports": list(ports)}}


def endpoint_slice(owner: str, port: int, *endpoints: tuple[str, bool], name: str = "http") -> dict:
    return {"metadata": {"namespace": "team", "name": f"{owner}-x", "labels": {"kubernetes.io/service-name": owner}},
            "addressType": "IPv4", "ports": [{"name": name, "port": port}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a, ready in endpoints]}


def test_ready_endpoints_on_the_pod_network_are_routed_by_port_name() -> None:
    services = [service("vllm", "10.96.0.20", {"name": "http", "port": 8000, "targetPort": "http"},
                        {"name": "dns", "port": 53, "protocol": "UDP"}),
                service("train", "None", {"name": "p", "port": 29500}),  # headless: DNS only
                service("kubernetes", "10.96.0.1", {"name": "https", "port": 443}, selector={}),
                service("elsewhere", "10.96.0.30", {"name": "http", "port": 80}),
                service("idle", "10.96.0.40", {"name": "http", "port": 80})]
    slices = [endpoint_slice("vllm", 8001, ("10.213.7.3", True), ("10.213.7.2", True), ("10.213.7.4", False)),
              endpoint_slice("train", 29500, ("10.213.7.5", True), name="p"),
              endpoint_slice("kubernetes", 6443, ("10.213.7.1", True), name="https"),
              endpoint_slice("elsewhere", 80, ("192.0.2.9", True)),  # not on this runner: never a target
              endpoint_slice("idle", 80, ("10.213.7.6", False))]
    assert routes(services, slices, POD_NETWORK) == {
        ("10.96.0.20", 8000): Route("team/vllm", "10.96.0.20", 8000, (("10.213.7.2", 8001), ("10.213.7.3", 8001)))}

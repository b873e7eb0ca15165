"""The pod network's address allocator (tests/harness/podrunner/cni.py). The bridge, namespaces and veths
themselves are proven in running pods by tests/api/test_pod_network.py."""

from __future__ import annotations

import ipaddress

import pytest

from tests.harness.podrunner.cni import AddressAllocator, PodNetworkError

pytestmark = pytest.mark.unit


def test_addresses_skip_the_gateway_and_a_freed_one_comes_back_last() -> None:
    network = ipaddress.IPv4Network("10.213.7.0/29")
    allocator = AddressAllocator(network, network.network_address + 1)
    first = [str(allocator.allocate()) for _ in range(3)]
    assert first == ["10.213.7.2", "10.213.7.3", "10.213.7.4"]
    allocator.release(ipaddress.IPv4Address("10.213.7.2"))
    assert [str(allocator.allocate()) for _ in range(3)] == ["10.213.7.5", "10.213.7.6", "10.213.7.2"]
    with pytest.raises(PodNetworkError, match="no free address"):
        allocator.allocate()

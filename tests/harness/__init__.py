"""Test harness: the real test control plane (tests/controlplane), kwok GPU nodes and the local pod
runner. See docs/controlplane.md."""

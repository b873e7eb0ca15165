"""Test tiers (DESIGN.md §8): `unit`, `api`, `e2e`, `cluster`. Fixtures for the control plane come
from the harness plugin; everything else lives next to the tests that use it."""

pytest_plugins = ["tests.harness.plugin"]

"""pytest plugin (loaded from tests/conftest.py): control-plane fixtures.

Fixtures
  cluster       session: a running test control plane (or the cluster named by KUBECONFIG when
                FT_USE_EXISTING_CLUSTER=1). Object API: `.kubeconfig` (path), `.kubectl(*args,
                input=None, check=True, timeout=120)` -> CompletedProcess, `.helm(*args)`,
                `.api_client()` -> kubernetes.client.ApiClient, `.apply(path|yaml|dict|list)`,
                `.create_namespace(name)`, `.logs_dir`, `.log_tail()`, `.server`, `.external`,
                `.gpu_nodes`, `.timings`.
  local_runner  session: the local pod runner (node `local-runner`). Object API: `.node_name`,
                `.node_selector`, `.tolerations` (put both in a pod spec to run it here),
                `.logs(namespace, pod, container=None)`, `.pod_dir(namespace, pod)`, `.work_dir`.
  namespace     function: a fresh namespace (default ServiceAccount ready), deleted afterwards.

When a test that uses `cluster` fails, the tails of all component logs are attached to its report.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.harness.cluster import Cluster, start_from_env

_state: dict[str, object] = {}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c: Cluster = start_from_env(tmp_path_factory.mktemp("controlplane"))
    _state["cluster"] = c
    try:
        yield c
    finally:
        _state.pop("cluster", None)
        c.stop()


@pytest.fixture(scope="session")
def local_runner(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    if cluster.external and os.environ.get("FT_LOCAL_RUNNER_ON_EXISTING_CLUSTER") != "1":
        pytest.skip("local pod runner is not started on an existing cluster "
                    "(set FT_LOCAL_RUNNER_ON_EXISTING_CLUSTER=1 to register node local-runner there)")
    from tests.harness.podrunner import LocalRunnerProcess

    r = LocalRunnerProcess.start(cluster, tmp_path_factory.mktemp("local-runner"))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig for the operator's ServiceAccount, bound to exactly `rbac.REQUIRED_RULES`."""
    from tests.harness.operator import operator_kubeconfig_for

    return operator_kubeconfig_for(cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest):
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


TIER_ORDER = ("unit", "api", "e2e", "cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tiers in order: unit tests first (fast feedback). Under `pytest -n 2` (`make test`) each
    xdist worker keeps this order and starts its own control plane at its first test that needs one
    (DESIGN §8)."""

    def tier(item: pytest.Item) -> int:
        marks = {m.name for m in item.iter_markers()}
        return next((i for i, name in enumerate(TIER_ORDER) if name in marks), len(TIER_ORDER))

    items.sort(key=tier)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        c = _state.get("cluster")
        if isinstance(c, Cluster):
            try:
                report.sections.append(("control plane logs (tail)", c.log_tail(25)))
            except Exception as e:  # never hide the real failure
                report.sections.append(("control plane logs (tail)", f"<could not read logs: {e}>"))
    return report

"""Serving access on the real API server: a namespace without the serving API key Secret keeps its job
`Deploying` with a status that names the Secret to create, and the operator reads that one Secret only
(its ClusterRole grants `get` on `finetune-serving-api-key` by name, nothing else)."""

from __future__ import annotations

import pytest

from tests.api.test_operator import ftj
from tests.harness.operator import Operator, PodDriver, api_key_secret, setup_namespace, status, wait_for

pytestmark = pytest.mark.api


def test_a_missing_api_key_secret_is_named_in_the_status_until_it_exists(cluster, namespace, operator_kubeconfig,
                                                                         tmp_path):
    setup_namespace(cluster, namespace, api_key=False)
    pods = PodDriver.passing(cluster, namespace)
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="none").start()
    try:
        cluster.apply({**ftj("keyless", serving={"mode": "adapter"}), "metadata": {"name": "keyless", "namespace": namespace}})
        waiting = wait_for("the missing Secret in the status", lambda: (s := status(cluster, namespace, "keyless"))
                           .get("phase") == "Deploying" and "finetune-serving-api-key" in s.get("message", "") and s,
                           timeout=120, interval=1)
        assert f"Secret {namespace}/finetune-serving-api-key with key 'api-key' is missing" in waiting["message"]

        cluster.apply(api_key_secret(namespace))
        moved_on = wait_for("the status to move past the Secret", lambda: (s := status(cluster, namespace, "keyless"))
                            .get("message") and "finetune-serving-api-key" not in s["message"] and s,
                            timeout=60, interval=1)
        assert moved_on["phase"] == "Deploying", moved_on  # kwok's vLLM pods never answer: it waits for them
    finally:
        pods.close()
        operator.stop()  # also asserts that no call was refused by RBAC (the Secret read included)

"""The k8s layer refuses calls the chart's ClusterRole would not allow, and counts the ones it makes."""

import pytest
from kubernetes import client
from urllib3.exceptions import MaxRetryError

from finetune_operator import rbac
from finetune_operator.k8s import K8s, NotPermitted
from finetune_operator.runtime.context import rbac_features
from finetune_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def unreachable_client() -> client.ApiClient:
    config = client.Configuration()
    config.host = "http://127.0.0.1:9"  # nothing listens: an allowed call fails at connect, not at RBAC
    return client.ApiClient(config)


def test_rules_allow_what_the_operator_does_and_nothing_broader():
    assert rbac.allows("batch", "jobs", "create")
    assert rbac.allows("finetune.dev", "finetunejobs/status", "patch")
    assert rbac.allows("", "pods/log", "get")
    assert rbac.allows("finetune.dev", "finetunejobs", "patch")  # the source-cache hold's finalizer
    assert not rbac.allows("finetune.dev", "finetunejobs", "delete")  # the user's object, never ours to delete
    assert not rbac.allows("", "secrets", "get")  # any Secret: no
    assert not rbac.allows("", "secrets", "get", name="db-password")
    assert rbac.allows("", "secrets", "get", name="finetune-serving-api-key")  # the serving API key only
    assert not rbac.allows("", "secrets", "list")
    assert not rbac.allows("", "pods", "create")
    assert all("*" not in r.verbs and "*" not in r.resources for r in rbac.REQUIRED_RULES)


def test_cluster_role_renders_every_rule():
    role = rbac.cluster_role()
    assert role["kind"] == "ClusterRole"
    assert len(role["rules"]) == len(rbac.REQUIRED_RULES)
    assert {"apiGroups": ["batch"], "resources": ["jobs"],
            "verbs": ["get", "list", "watch", "create", "delete"]} in role["rules"]


def test_a_call_outside_the_rules_is_refused_before_it_leaves():
    k8s = K8s(unreachable_client(), rules=tuple(r for r in rbac.REQUIRED_RULES if r.resources != ("configmaps",)))
    with pytest.raises(NotPermitted, match="create core/configmaps"):
        k8s.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}})
    with pytest.raises(NotPermitted, match="delete finetune.dev/finetunejobs"):
        k8s.delete("FineTuneJob", "ns", "x")
    assert k8s.total_requests == 0


def test_allowed_calls_are_counted_by_verb_and_resource():
    seen = []
    k8s = K8s(unreachable_client(), on_request=lambda verb, res: seen.append((verb, res)))
    with pytest.raises(MaxRetryError):  # allowed, so it reached the (closed) port
        k8s.pod_log_tail("ns", "pod", None, 10)
    assert seen == [("get", "pods/log")] and k8s.requests[("get", "pods/log")] == 1


def test_feature_rules_are_granted_only_with_their_feature():
    base = rbac.rules_for(frozenset())
    assert not rbac.allows("kueue.x-k8s.io", "workloads", "watch", base)
    assert not rbac.allows("kopf.dev", "clusterkopfpeerings", "patch", base)
    assert not rbac.allows("gateway.networking.k8s.io", "httproutes", "create", base)
    assert rbac.allows("kueue.x-k8s.io", "workloads", "watch", rbac.rules_for({"kueue"}))
    assert rbac.rules_for(set(rbac.FEATURES)) == rbac.REQUIRED_RULES


def test_a_process_uses_the_features_its_settings_turn_on():
    assert rbac_features(OperatorSettings(), {}) == frozenset()
    assert rbac_features(OperatorSettings(queue_mode="kueue", gateway_api=True), {"FT_PEERING": "ft"}) == {
        "kueue", "gatewayApi", "peering"}


def test_an_install_without_gateway_api_refuses_httproute_calls_before_they_leave():
    k8s = K8s(unreachable_client(), rules=rbac.rules_for(rbac_features(OperatorSettings(), {})))
    with pytest.raises(NotPermitted, match="create gateway.networking.k8s.io/httproutes"):
        k8s.create({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "x", "namespace": "ns"}})

"""The chart grants exactly `finetune_operator.rbac.REQUIRED_RULES` of the features an install uses (the
calls the operator's k8s layer lets through), namespaced by default and cluster-wide on request, and the
generated template is up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from finetune_operator import rbac

from .chart import REPO, by_kind, one, rule_triples, template

pytestmark = pytest.mark.unit


def gen_rbac() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_rbac", REPO / "scripts" / "gen-rbac.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REQUIRED = rule_triples(rbac.cluster_role_rules())
BASE = rule_triples([r.to_api() for r in rbac.rules_for(frozenset())])


def granted(objects: list[dict]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the install's ClusterRole and Roles grant."""
    return set().union(*(rule_triples(o["rules"]) for o in by_kind(objects, "ClusterRole") + by_kind(objects, "Role")))


def test_generated_rules_template_is_up_to_date() -> None:
    gen = gen_rbac()
    assert gen.RULES_TEMPLATE.read_text() == gen.render_template(), "run scripts/gen-rbac.py"


def test_splitting_by_scope_loses_and_adds_nothing() -> None:
    split = gen_rbac().split_rules()
    assert rule_triples(split["cluster"]) | rule_triples(split["namespaced"]) == REQUIRED
    assert not rule_triples(split["cluster"]) & rule_triples(split["namespaced"])


def test_scope_of_known_resources() -> None:
    gen = gen_rbac()
    assert gen.is_cluster_scoped("finetune.dev", "finetunequeues/status")
    assert gen.is_cluster_scoped("", "namespaces")
    assert not gen.is_cluster_scoped("finetune.dev", "finetunejobs")
    assert not gen.is_cluster_scoped("", "pods/log")


def test_generator_splits_a_rule_that_mixes_scopes() -> None:
    mixed = (rbac.PolicyRule(("",), ("pods", "namespaces", "pods/log"), ("get", "list")),)
    split = gen_rbac().split_rules(mixed)
    assert split["cluster"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]
    assert split["namespaced"] == [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]


def test_default_install_is_namespaced_to_the_release_namespace() -> None:
    objects = template("defaults")
    split = gen_rbac().split_rules(rbac.rules_for(frozenset()))
    assert rule_triples(one(objects, "ClusterRole")["rules"]) == rule_triples(split["cluster"])
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "finetune-system"
    assert rule_triples(role["rules"]) == rule_triples(split["namespaced"])
    assert granted(objects) == BASE  # no Kueue, peering or Gateway API grant it does not use
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=finetune-system" in args and "--all-namespaces" not in args
    # Cluster-scoped kinds only: no Jobs, pods or logs of any namespace through the ClusterRole.
    assert {r for _, r, _ in rule_triples(one(objects, "ClusterRole")["rules"])} == {
        "finetunequeues", "finetunequeues/status", "namespaces", "customresourcedefinitions"}


def test_each_feature_adds_exactly_its_rules(tmp_path: Path) -> None:
    for feature, overrides in {"kueue": {"queue": {"mode": "kueue"}}, "peering": {"replicaCount": 2},
                               "gatewayApi": {"jobs": {"gatewayApi": True}}}.items():
        objects = template("defaults", overrides, tmp_path)
        extra = granted(objects) - BASE
        assert extra == rule_triples([r.to_api() for r in rbac.REQUIRED_RULES if r.feature == feature]), feature
        assert extra


def test_children_may_block_their_owners_deletion() -> None:
    """blockOwnerDeletion needs update on the owner's finalizers (OwnerReferencesPermissionEnforcement)."""
    assert ("finetune.dev", "finetunejobs/finalizers", "update") in granted(template("defaults"))


def test_cluster_wide_install_grants_the_required_rules_in_one_cluster_role() -> None:
    objects = template("cluster-wide")
    assert rule_triples(one(objects, "ClusterRole")["rules"]) == BASE
    assert not by_kind(objects, "Role")
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ft-finetune-operator", "namespace": "finetune-system"}]


def test_cluster_wide_and_listed_namespaces_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="leave watchNamespaces empty"):
        template("cluster-wide", {"watchNamespaces": ["team-a"]}, tmp_path)


def test_namespaced_install_grants_namespaced_rules_only_in_the_watched_namespaces() -> None:
    objects = template("kueue-namespaced")
    split = gen_rbac().split_rules(rbac.rules_for({"kueue"}))
    assert rule_triples(one(objects, "ClusterRole")["rules"]) == rule_triples(split["cluster"])
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rule_triples(role["rules"]) == rule_triples(split["namespaced"])
    bindings = by_kind(objects, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["kind"]) for b in bindings) == [
        ("team-a", "Role"), ("team-b", "Role")]
    assert granted(objects) == rule_triples([r.to_api() for r in rbac.rules_for({"kueue"})])


def test_no_wildcards_secrets_or_escalation() -> None:
    for values_set in ("defaults", "kueue-namespaced", "cluster-wide", "peering-monitoring"):
        triples = granted(template(values_set))
        assert not {t for t in triples if "*" in t}
        assert not {t for t in triples if t[1] == "secrets"}
        assert not {t for t in triples if t[2] in {"escalate", "bind", "impersonate"}}


def test_rbac_can_be_left_to_the_admin(tmp_path: Path) -> None:
    objects = template("defaults", {"rbac": {"create": False}}, tmp_path)
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "Role")

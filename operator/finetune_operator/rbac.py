"""The exact RBAC the operator needs: the Helm chart renders its Roles and ClusterRole from
`REQUIRED_RULES`, and `k8s.K8s` refuses any call these rules do not allow, so the chart and the code
cannot drift.

Kopf's own calls (watches of every resource the handlers and indexes observe, peering) are declared
here too: the operator runs with exactly these rules and nothing else. A rule tagged with a `Feature`
is granted only where that feature is on (Kueue mode, several peering replicas, Gateway API canaries),
so an install carries no grant it never uses (`rules_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from finetune_api.contract.vllm import API_KEY_SECRET

Feature = Literal["kueue", "peering", "gatewayApi"]
"""An optional part of the operator whose rules only installs that use it get (the chart's condition
for each is in scripts/gen-rbac.py: `queue.mode=kueue`, `replicaCount > 1`, `jobs.gatewayApi`)."""
FEATURES: tuple[Feature, ...] = ("kueue", "peering", "gatewayApi")


@dataclass(frozen=True)
class PolicyRule:
    """One rbac.authorization.k8s.io/v1 PolicyRule (resources may name a subresource: `pods/log`)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    feature: Feature | None = None
    """Granted only when this feature is on; None: always."""
    resource_names: tuple[str, ...] = ()
    """Only these objects (empty: any)."""

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": list(self.api_groups), "resources": list(self.resources)}
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return {**out, "verbs": list(self.verbs)}


WATCH = ("get", "list", "watch")

REQUIRED_RULES: tuple[PolicyRule, ...] = (
    # the API: watch jobs and queues, write job status, read queue flavors
    # patch: the source-cache hold's finalizer (reconcile/holds.py), the only metadata the operator writes
    PolicyRule(("finetune.dev",), ("finetunejobs",), (*WATCH, "patch")),
    PolicyRule(("finetune.dev",), ("finetunejobs/status",), ("get", "patch")),
    # children carry `blockOwnerDeletion: true`: OwnerReferencesPermissionEnforcement (OpenShift) lets
    # only who may update the owner's finalizers set it.
    PolicyRule(("finetune.dev",), ("finetunejobs/finalizers",), ("update",)),
    PolicyRule(("finetune.dev",), ("finetunequeues",), WATCH),
    PolicyRule(("finetune.dev",), ("finetunequeues/status",), ("get", "patch")),
    # children (DESIGN.md §4): created by name, observed through watches, deleted on retry/preemption
    PolicyRule(("",), ("configmaps",), ("get", "create", "patch")),
    PolicyRule(("",), ("services",), ("get", "create", "patch", "delete")),
    PolicyRule(("batch",), ("jobs",), ("get", "list", "watch", "create", "delete")),
    PolicyRule(("apps",), ("deployments",), ("get", "create", "patch", "delete")),
    PolicyRule(("gateway.networking.k8s.io",), ("httproutes",), ("get", "create", "patch", "delete"), "gatewayApi"),
    # exit codes and termination messages; progress from the rank-0 trainer's log tail
    PolicyRule(("",), ("pods",), WATCH),
    PolicyRule(("",), ("pods/log",), ("get",)),
    # adapter pools: a replica's readiness gate, set once it holds every adapter
    PolicyRule(("",), ("pods/status",), ("patch",)),
    # the smoke request goes to a ready endpoint of the serving Service
    PolicyRule(("discovery.k8s.io",), ("endpointslices",), ("list",)),
    # the serving endpoints' API key (vLLM --api-key): that one Secret per namespace, nothing else
    PolicyRule(("",), ("secrets",), ("get",), resource_names=(API_KEY_SECRET,)),
    # an Event for every transition and failure
    PolicyRule(("",), ("events",), ("create",)),
    PolicyRule(("events.k8s.io",), ("events",), ("create",)),
    # Kueue mode: mirror the Workload of the suspended training Job
    PolicyRule(("kueue.x-k8s.io",), ("workloads",), WATCH, "kueue"),
    # Kopf: peering between replicas (one active operator)
    PolicyRule(("kopf.dev",), ("clusterkopfpeerings",), ("get", "list", "watch", "patch"), "peering"),
    # namespace labels, for the queues' namespaceSelector (handlers/indexes.py)
    PolicyRule(("",), ("namespaces",), ("list", "watch")),
    # Kopf notices CRDs installed after it started (Kueue's, Gateway API's)
    PolicyRule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch")),
)


def rules_for(features: frozenset[Feature] | set[Feature], rules: tuple[PolicyRule, ...] = REQUIRED_RULES) -> tuple[PolicyRule, ...]:
    """The rules an install with these features on is granted: the untagged ones and those of its features."""
    return tuple(r for r in rules if r.feature is None or r.feature in features)


def allows(group: str, resource: str, verb: str, rules: tuple[PolicyRule, ...] = REQUIRED_RULES,
           name: str | None = None) -> bool:
    """Whether the rules grant `verb` on `resource` (`pods/log` style for subresources) in `group`, for the
    object `name` (a rule limited to some names grants nothing without one)."""
    return any(
        (group in r.api_groups or "*" in r.api_groups)
        and (resource in r.resources or "*" in r.resources)
        and (verb in r.verbs or "*" in r.verbs)
        and (not r.resource_names or name in r.resource_names)
        for r in rules
    )


def cluster_role_rules(rules: tuple[PolicyRule, ...] = REQUIRED_RULES) -> list[dict[str, Any]]:
    """The `rules:` of the operator's ClusterRole, as the chart renders them."""
    return [r.to_api() for r in rules]


def cluster_role(name: str = "finetune-operator") -> dict[str, Any]:
    """A complete ClusterRole object (tests bind it to the operator's ServiceAccount)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": cluster_role_rules(),
    }

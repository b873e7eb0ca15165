"""charts/finetune-operator rendered by the real `helm` with four values sets: lint, Kubernetes schema
validity of every object, the operator's settings and Kopf arguments, and the pod's hardening."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from finetune_api.queue import FineTuneQueue
from finetune_operator.settings import OperatorSettings

from .chart import CHART, KUBE_VERSION, NAMESPACE, VALUES_DIR, VALUES_SETS, by_kind, container_env, helm, one, template

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.32"
# Objects of other projects' CRDs, checked against the fields their controllers require.
FOREIGN_SHAPES: dict[str, dict[str, Any]] = {
    "monitoring.coreos.com/v1/ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "namespaceSelector": {"type": "object", "properties": {"matchNames": {"type": "array"}}},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["port"],
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                       "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}},
                },
            },
        },
    },
    "kopf.dev/v1/ClusterKopfPeering": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {"metadata": {"type": "object", "required": ["name"],
                                    "not": {"required": ["namespace"]}}},
    },
}


@pytest.fixture(scope="module", params=VALUES_SETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, template(request.param)


def test_there_are_at_least_four_values_sets() -> None:
    assert len(VALUES_SETS) >= 4, VALUES_SETS


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_helm_lint_strict(values_set: str) -> None:
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(VALUES_DIR / f"{values_set}.yaml"))
    assert "0 chart(s) failed" in out.stdout


def test_every_object_is_valid_for_its_schema(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_set, objects = rendered
    problems = []
    for obj in objects:
        key = f"{obj['apiVersion']}/{obj['kind']}"
        name = f"{values_set}: {obj['kind']}/{obj['metadata'].get('name')}"
        if key in FOREIGN_SHAPES:
            errors = [e.message for e in jsonschema.Draft7Validator(FOREIGN_SHAPES[key]).iter_errors(obj)]
            problems += [f"{name}: {e}" for e in errors]
        elif obj["kind"] == "FineTuneQueue":
            FineTuneQueue.model_validate(obj)  # our own API model, the CRD's source
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not problems, "\n".join(problems)


def test_every_namespaced_object_names_its_namespace(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "FineTuneQueue",
                      "ClusterKopfPeering", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    _, objects = rendered
    missing = [f"{o['kind']}/{o['metadata']['name']}" for o in objects
               if o["kind"] not in cluster_scoped and not o["metadata"].get("namespace")]
    assert not missing


def settings_of(objects: list[dict[str, Any]]) -> OperatorSettings:
    """What the operator reads from the Deployment's env, through its own parser."""
    return OperatorSettings.from_env(container_env(one(objects, "Deployment")))


def test_defaults_give_the_settings_defaults_watching_the_release_namespace() -> None:
    assert settings_of(template("defaults")) == OperatorSettings(watch_namespaces=["finetune-system"])
    assert settings_of(template("cluster-wide")).watch_namespaces == []


def test_every_setting_has_its_env_var() -> None:
    env = container_env(one(template("kueue-namespaced"), "Deployment"))
    assert {f"FT_{name.upper()}" for name in OperatorSettings.model_fields} <= set(env)


def test_values_map_to_the_operator_settings() -> None:
    kueue = settings_of(template("kueue-namespaced"))
    assert kueue.queue_mode == "kueue"
    assert kueue.watch_namespaces == ["team-a", "team-b"]
    assert kueue.priority_class_name == "training-low"
    assert kueue.progress_interval_seconds == 10
    assert kueue.source_cache_max_bytes == 536870912000

    cpu = settings_of(template("cpu-custom"))
    assert cpu.cpu_runtime is True
    assert cpu.queue_mode == "none"
    assert cpu.trainer_image == "registry.example.com/ml/finetune-trainer-cpu:0.1.0"
    assert cpu.vllm_image == "registry.example.com/ml/finetune-vllm-cpu:0.32.0"
    assert cpu.image_pull_policy == "Always"
    assert cpu.artifacts_pvc == "ml-artifacts"
    assert cpu.pvc_mount_root == "/data"


def kopf_args(objects: list[dict[str, Any]]) -> list[str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "kopf", "run"]
    return container["args"]


def test_one_replica_is_standalone_with_recreate() -> None:
    objects = template("defaults")
    args = kopf_args(objects)
    assert "--standalone" in args and "--namespace=finetune-system" in args
    assert "FT_PEERING" not in container_env(one(objects, "Deployment"))
    assert args[-2:] == ["-m", "finetune_operator.main"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(objects, "ClusterKopfPeering")


def test_several_replicas_peer_through_a_cluster_wide_peering() -> None:
    objects = template("peering-monitoring")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    peering = one(objects, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in kopf_args(objects)
    assert container_env(deployment)["FT_PEERING"] == peering["metadata"]["name"]
    crd = one(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    env_from_fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
                       for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e}
    assert env_from_fields["POD_ID"] == "metadata.name"  # Kopf's peer identity


def test_watched_namespaces_become_kopf_namespace_flags() -> None:
    args = kopf_args(template("kueue-namespaced"))
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args


def test_operator_pod_is_hardened(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] >= 10000
    assert set(container["resources"]) == {"requests", "limits"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container_env(one(objects, "Deployment"))["FT_METRICS_PORT"] == "9090"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_only_the_operator_container_gets_the_api_token() -> None:
    pod = one(template("defaults"), "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["api-access"] == {"name": "api-access", "readOnly": True,
                                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-access"]
    files = {s["serviceAccountToken"]["path"] if "serviceAccountToken" in s else
             (s.get("configMap") or s.get("downwardAPI"))["items"][0]["path"] for s in volume["projected"]["sources"]}
    assert files == {"token", "ca.crt", "namespace"}  # what in-cluster config loaders read


def test_image_tag_defaults_to_app_version_and_a_digest_wins() -> None:
    image = lambda objects: one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]  # noqa: E731
    assert image(template("defaults")) == "ghcr.io/finetune-operator/operator:0.1.0"
    assert image(template("cpu-custom")) == "registry.example.com/ml/finetune-operator:0.1.0-rc1"
    assert image(template("peering-monitoring")).startswith("ghcr.io/finetune-operator/operator@sha256:0123")


def test_placement_values_reach_the_pod() -> None:
    pod = one(template("peering-monitoring"), "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    custom = one(template("cpu-custom"), "Deployment")["spec"]["template"]["spec"]
    assert custom["imagePullSecrets"] == [{"name": "registry-example"}]
    assert custom["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_metrics_service_selects_the_operator_and_the_service_monitor_selects_the_service() -> None:
    objects = template("peering-monitoring")
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(template("defaults"), "ServiceMonitor")


def test_default_queue_is_optional_and_carries_the_values() -> None:
    assert not by_kind(template("defaults"), "FineTuneQueue")
    queue = FineTuneQueue.model_validate(one(template("peering-monitoring"), "FineTuneQueue"))
    assert queue.metadata.name == "default"
    assert queue.spec.strategy == "StrictFIFO"
    assert [f.name for f in queue.spec.flavors] == ["a100"]
    assert [p.name for p in queue.spec.priority_classes] == ["production", "batch"]


def test_trainer_service_account_has_no_token_and_no_rules(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_set, objects = rendered
    trainer_accounts = [o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] == "finetune-trainer"]
    assert trainer_accounts, values_set
    assert all(sa["automountServiceAccountToken"] is False for sa in trainer_accounts)
    bound = {s["name"] for b in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
             for s in b["subjects"]}
    assert "finetune-trainer" not in bound


def test_job_namespaces_get_the_trainer_account_and_optionally_the_claim() -> None:
    namespaces = lambda objects, kind: sorted(o["metadata"]["namespace"] for o in by_kind(objects, kind)  # noqa: E731
                                              if o["metadata"]["name"] in {"finetune-trainer", "ml-artifacts"})
    assert namespaces(template("defaults"), "ServiceAccount") == [NAMESPACE]
    assert namespaces(template("kueue-namespaced"), "ServiceAccount") == ["team-a", "team-b"]
    cpu = template("cpu-custom")
    assert namespaces(cpu, "ServiceAccount") == ["ml-dev", "ml-prod"]
    assert namespaces(cpu, "PersistentVolumeClaim") == ["ml-dev", "ml-prod"]
    claim = by_kind(cpu, "PersistentVolumeClaim")[0]
    assert claim["spec"]["storageClassName"] == "fast-nfs"
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(template("defaults"), "PersistentVolumeClaim")


def test_serving_endpoints_admit_only_labelled_clients_shadow_graders_evaluations_and_the_operator() -> None:
    objects = template("kueue-namespaced")
    policies = [o for o in by_kind(objects, "NetworkPolicy") if o["metadata"]["name"].endswith("-serving")]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    spec = policies[0]["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "finetune-operator",
                                                  "finetune.dev/phase": "serve"}
    peers = spec["ingress"][0]["from"]
    assert peers[0] == {"podSelector": {"matchLabels": {"finetune.dev/serving-client": "true"}}}
    # a canary's shadow grading pods ask both arms (the labels the operator's shadow Job gives its pods)
    assert peers[1] == {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "finetune-operator",
                                                        "finetune.dev/phase": "shadow"}}}
    # evaluation pods whose score_model grader asks the namespace's adapter pool (the default judge)
    assert peers[2] == {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "finetune-operator",
                                                        "finetune.dev/phase": "eval"}}}
    operator_labels = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert peers[3]["podSelector"]["matchLabels"] == operator_labels
    assert peers[3]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert len(peers) == 4 and spec["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_crds_ship_in_the_crds_directory() -> None:
    crds = [o for o in template("defaults", include_crds=True) if o["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == ["finetunejobs.finetune.dev", "finetunequeues.finetune.dev"]


def test_namespace_caps_reach_the_operator_and_nothing_else_does(tmp_path) -> None:
    objects = template("defaults", {"policy": {"namespaces": {
        "team-a": {"maxConcurrentJobs": 3, "maxGpus": 16, "maxGpusPerJob": 8}, "team-b": {"priorityClasses": ["x"]}}}}, tmp_path)
    caps = settings_of(objects).namespace_caps
    assert set(caps) == {"team-a"}
    assert (caps["team-a"].max_concurrent_jobs, caps["team-a"].max_gpus) == (3, 16)

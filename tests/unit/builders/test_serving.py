"""Serving objects: merged Deployments, the shared adapter pool, canaries and HTTPRoutes."""

from __future__ import annotations

import json

import pytest

from finetune_api import FineTuneJob
from finetune_api.contract.sources import SOURCE_CACHE_DIR, cache_path
from finetune_api.job import DataReport, FineTuneJobStatus
from finetune_operator.builders import build_serving_objects, canary_split, pool_member, serving_endpoint
from finetune_operator.builders.children import build_child
from finetune_operator.reconcile.pool import ADAPTERS_GATE
from finetune_operator.settings import AdapterPoolSettings, OperatorSettings

from .conftest import make_job, validate

pytestmark = pytest.mark.unit


def _by(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_merged_deployment_serves_versioned_names_with_probes() -> None:
    job = make_job("faq", serving={"mode": "merged", "replicas": 2, "gpus": 1, "memory": "32Gi"})
    objects = build_serving_objects(job, OperatorSettings())
    deployment = _by(objects, "Deployment", "faq-serve")
    container = _container(deployment)
    args = container["args"]
    assert _flag(args, "--model") == "/mnt/pvc/finetune-artifacts/team-a/faq/merged"
    assert args[args.index("--served-model-name") + 1 : args.index("--port")] == ["faq@2", "faq"]
    assert container["image"] == OperatorSettings().vllm_image and container["command"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 600
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "50Gi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env, "GPU serving keeps vLLM's process layout"
    assert deployment["spec"]["replicas"] == 2
    service = _by(objects, "Service", "faq-serve")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert serving_endpoint(job) == "http://faq-serve.team-a.svc:8000/v1"


@pytest.mark.parametrize("mode", ["merged", "adapter"])
def test_the_endpoint_takes_its_api_key_from_the_namespaces_secret_never_from_args(mode: str) -> None:
    job = make_job("faq", serving={"mode": mode})
    deployment = next(o for o in build_serving_objects(job, OperatorSettings()) if o["kind"] == "Deployment")
    container = _container(deployment)
    key = next(e for e in container["env"] if e["name"] == "VLLM_API_KEY")
    assert key == {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "finetune-serving-api-key", "key": "api-key"}}}
    assert "--api-key" not in container["args"]
    open_deployment = build_serving_objects(job, OperatorSettings(serving_api_key=False))[0]
    assert all(e["name"] != "VLLM_API_KEY" for e in _container(open_deployment)["env"])


def test_cpu_runtime_sets_the_kv_cache_and_eager_mode_and_keeps_vllms_process_layout() -> None:
    job = make_job("faq", serving={"mode": "merged", "gpus": 0, "memory": "16Gi"})
    container = _container(build_serving_objects(job, OperatorSettings(cpu_runtime=True))[0])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4" and "--enforce-eager" in container["args"]
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env


def test_adapter_pool_is_the_admins_definition_and_is_owned_by_each_job() -> None:
    pool_settings = AdapterPoolSettings(replicas=2, gpus=1, memory="24Gi", max_loras=8, max_cpu_loras=64,
                                        max_lora_rank=32, node_selector={"pool": "serving"})
    settings = OperatorSettings(adapter_pool=pool_settings)
    a = make_job("alpha", adapter={"r": 8}, serving={"replicas": 1})
    b = make_job("beta", adapter={"r": 16}, serving={"replicas": 3, "memory": "99Gi", "args": ["--seed", "1"]})
    objects = build_serving_objects(b, settings, [pool_member(a, settings)])
    for obj in objects:
        validate(obj)
    pool = _by(objects, "Deployment", "vllm-base-7b")
    container = _container(pool)
    args = container["args"]
    assert _flag(args, "--model") == "/mnt/pvc/models/base-7b" and _flag(args, "--served-model-name") == "base-7b"
    assert "--lora-modules" not in args and "--enable-lora" in args and "--seed" not in args
    assert (_flag(args, "--max-loras"), _flag(args, "--max-cpu-loras"), _flag(args, "--max-lora-rank")) == ("8", "64", "32")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert container["resources"]["limits"]["memory"] == "24Gi"
    template = pool["spec"]["template"]["spec"]
    assert template["readinessGates"] == [{"conditionType": ADAPTERS_GATE}]
    assert template["nodeSelector"] == {"pool": "serving"}
    assert pool["spec"]["replicas"] == 2
    owners = pool["metadata"]["ownerReferences"]
    assert [(o["name"], o["controller"]) for o in owners] == [("alpha", False), ("beta", False)]
    job_service = _by(objects, "Service", "beta-serve")
    assert job_service["metadata"]["ownerReferences"][0]["controller"] is True
    assert job_service["spec"]["selector"] == pool["spec"]["selector"]["matchLabels"]
    # the pool is the same whichever of its jobs builds it
    assert _by(build_serving_objects(a, settings, [pool_member(b, settings)]), "Deployment", "vllm-base-7b") == pool


def test_an_adapter_joining_leaves_the_pod_template_unchanged_so_nothing_restarts() -> None:
    settings = OperatorSettings()
    a, b = make_job("alpha"), make_job("beta", adapter={"r": 64}, serving={"replicas": 4, "memory": "64Gi"})
    alone = _by(build_serving_objects(a, settings), "Deployment", "vllm-base-7b")["spec"]
    shared = _by(build_serving_objects(a, settings, [pool_member(b, settings)]), "Deployment", "vllm-base-7b")["spec"]
    assert alone == shared


@pytest.mark.parametrize(
    ("replicas", "weight", "split"),
    [(10, 10, (1, 9)), (10, 25, (3, 7)), (4, 50, (2, 2)), (1, 10, (1, 1)), (3, 10, (1, 2)), (5, 0, (0, 5)), (5, 100, (5, 0)), (0, 10, (0, 0))],
)
def test_canary_split(replicas: int, weight: int, split: tuple[int, int]) -> None:
    assert canary_split(replicas, weight) == split


@pytest.mark.parametrize("serving", [{"mode": "merged"}, {"mode": "adapter", "canary": {"weight": 50}}, {"mode": "adapter"}])
def test_every_vllm_pod_finishes_its_requests_in_flight_before_the_grace_ends(serving: dict[str, object]) -> None:
    """vLLM's default aborts the requests in flight at SIGTERM (a scale-in, a roll-out, a canary's verdict
    fail clients with a 500); every server drains them, within what is left of the pod's grace."""
    job = make_job("faq", serving=serving)
    for deployment in (o for o in build_serving_objects(job, OperatorSettings()) if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        drain = int(_flag(container["args"], "--shutdown-timeout"))
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert drain > 0 and pre_stop + drain < pod["terminationGracePeriodSeconds"], deployment["metadata"]["name"]


def test_canary_puts_both_arms_behind_one_stable_service() -> None:
    job = make_job("faq", serving={"mode": "merged", "replicas": 10, "canary": {"weight": 10}})
    objects = build_serving_objects(job, OperatorSettings())
    tuned, base = _by(objects, "Deployment", "faq-serve"), _by(objects, "Deployment", "faq-base")
    assert (tuned["spec"]["replicas"], base["spec"]["replicas"]) == (1, 9)
    stable = _by(objects, "Service", "faq")
    for arm in (tuned, base):
        pod_labels = arm["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels[k] == v for k, v in stable["spec"]["selector"].items())
    base_args = _container(base)["args"]
    assert base_args[base_args.index("--served-model-name") + 1 : base_args.index("--port")] == ["base-7b", "faq"]
    assert not any(o["kind"] == "HTTPRoute" for o in objects)
    assert serving_endpoint(job) == "http://faq.team-a.svc:8000/v1"


@pytest.mark.parametrize("mode", ["merged", "adapter"])
def test_a_canarys_base_arm_runs_its_tuned_arms_engine_serving_the_base(mode: str) -> None:
    """An adapter's tuned arm runs a LoRA engine; its base arm runs the same one (every flag but what is
    served), so a latency ratio compares the adapter, not `--enable-lora` against none."""
    job = make_job("faq", serving={"mode": mode, "replicas": 2, "canary": {"weight": 50},
                                   "args": ["--custom-histogram-buckets", '{"request_latency": [0.1, 1]}']})
    objects = build_serving_objects(job, OperatorSettings())
    tuned, base = (_container(_by(objects, "Deployment", d))["args"] for d in ("faq-serve", "faq-base"))

    def engine(args: list[str]) -> list[str]:
        """Everything after what is served (`--model`, the served names; one adapter's `--lora-modules`)."""
        rest = args[args.index("--port"):]
        if "--lora-modules" in rest:
            del rest[rest.index("--lora-modules"):rest.index("--lora-modules") + 2]
        return rest

    assert engine(base) == engine(tuned) and "--custom-histogram-buckets" in base
    assert _flag(base, "--model") == "/mnt/pvc/models/base-7b"
    assert base[base.index("--served-model-name") + 1 : base.index("--port")] == ["base-7b", "faq"]
    assert "--lora-modules" not in base
    if mode == "adapter":
        assert {"--enable-lora", "--max-lora-rank", "--max-loras"} <= set(base)
        assert (_flag(base, "--max-lora-rank"), _flag(base, "--max-loras")) == (_flag(tuned, "--max-lora-rank"), "1")
    else:
        assert "--enable-lora" not in base


def test_the_shadow_grading_job_asks_each_arm_through_its_own_service_with_the_api_key() -> None:
    grader = {"name": "judge", "type": "score_model", "rubric": "helpful?"}
    job = make_job("faq", evaluation={"graders": [grader]},
                   serving={"mode": "adapter", "canary": {"shadowGrading": {"graders": ["judge"]}}})
    objects = build_serving_objects(job, OperatorSettings())
    base = _by(objects, "Deployment", "faq-base")
    assert _by(objects, "Service", "faq-base")["spec"]["selector"] == base["spec"]["selector"]["matchLabels"]

    (shadow,) = build_child("shadow", job, OperatorSettings())
    assert shadow["kind"] == "Job" and shadow["metadata"]["name"] == "faq-shadow"
    container = shadow["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["python", "-m", "finetune_trainer", "shadow"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["FT_SHADOW_TUNED_URL"] == "http://faq-serve.team-a.svc:8000/v1"
    assert env["FT_SHADOW_BASE_URL"] == "http://faq-base.team-a.svc:8000/v1"
    key = {"name": "finetune-serving-api-key", "key": "api-key"}
    assert env["VLLM_API_KEY"] == key and env["FT_GRADER_API_KEY_JUDGE"] == key
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    # the chart's serving NetworkPolicy admits the pods by these labels
    pod_labels = shadow["spec"]["template"]["metadata"]["labels"]
    assert (pod_labels["app.kubernetes.io/managed-by"], pod_labels["finetune.dev/phase"]) == ("finetune-operator", "shadow")


def test_gateway_api_canary_uses_route_weights() -> None:
    job = make_job("faq", serving={"mode": "adapter", "replicas": 4, "canary": {"weight": 30}})
    objects = build_serving_objects(job, OperatorSettings(gateway_api=True))
    route = _by(objects, "HTTPRoute", "faq")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "faq", "port": 8000}]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("faq-serve", 30), ("faq-base", 70)]
    assert {r["name"] for r in refs} <= {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    tuned_args = _container(_by(objects, "Deployment", "faq-serve"))["args"]
    assert json.loads(_flag(tuned_args, "--lora-modules"))["name"] == "faq"



def test_a_pool_on_a_hub_base_serves_its_cache_entry_whichever_job_builds_it() -> None:
    """Not one job's `sources/model` link: the pool's Deployment would change (and restart) with the job
    that last applied it, and lose its model with that job's directory."""
    settings = OperatorSettings()
    identity = "hf://org/base-7b@0123456789abcdef0123456789abcdef01234567"

    def fetched(name: str) -> FineTuneJob:
        job = make_job(name, model={"uri": "hf://org/base-7b"})
        job.status = FineTuneJobStatus(data=DataReport(sources={"model": identity}, model_digest="sha256:ab"))
        return job

    a, b = fetched("alpha"), fetched("beta")
    pools = [next(o for o in build_serving_objects(x, settings, [pool_member(y, settings)]) if o["kind"] == "Deployment")
             for x, y in ((a, b), (b, a))]
    assert pools[0] == pools[1]
    model = _flag(_container(pools[0])["args"], "--model")
    assert model == cache_path(f"/mnt/pvc/{settings.artifacts_pvc}/{SOURCE_CACHE_DIR}", identity)

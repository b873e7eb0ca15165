"""What the builders give evaluation and serving for admission (DESIGN.md §6): Kueue's labels where the
cluster's Kueue runs the integration, the embedded queue's flavor placement, and the requests the queue
charges (the pods' own, read as numbers)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from finetune_operator.builders import build_eval_job, build_serving_objects
from finetune_operator.builders.workloads import queued_workload, workload_requests
from finetune_operator.settings import AdapterPoolSettings, OperatorSettings
from finetune_api.queue import Flavor

from .conftest import make_job, validate

pytestmark = pytest.mark.unit

QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE = OperatorSettings(queue_mode="kueue")
KUEUE_DEPLOYMENTS = OperatorSettings(queue_mode="kueue", kueue_integrations=["batch/job", "deployment"],
                                     adapter_pool=AdapterPoolSettings(queue="pools"))


def deployments(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}


def test_a_gpu_evaluation_is_queued_by_kueue_and_a_cpu_one_is_not() -> None:
    job = make_job(queue={"name": "team-q", "priorityClass": "high"}, serving={"mode": "merged", "gpus": 2})
    queued = build_eval_job(job, KUEUE)
    validate(queued)
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"][QUEUE] == "team-q"
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    cpu = build_eval_job(make_job(serving={"mode": "merged", "gpus": 0}), KUEUE)
    assert "suspend" not in cpu["spec"] and QUEUE not in cpu["metadata"]["labels"]
    assert QUEUE not in build_eval_job(job, OperatorSettings())["metadata"]["labels"]


def test_serving_deployments_get_the_queue_label_only_with_kueues_deployment_integration() -> None:
    merged = make_job(serving={"mode": "merged", "gpus": 1, "replicas": 2})
    assert all(QUEUE not in d["metadata"]["labels"] for d in deployments(build_serving_objects(merged, KUEUE)).values())
    labelled = deployments(build_serving_objects(merged, KUEUE_DEPLOYMENTS))["ft-serve"]
    validate(labelled)
    assert labelled["metadata"]["labels"][QUEUE] == "default"
    assert QUEUE not in labelled["spec"]["selector"]["matchLabels"]  # the selector is immutable: never changes
    canary = make_job(serving={"mode": "merged", "gpus": 1, "replicas": 2, "canary": {"weight": 10}})
    arms = deployments(build_serving_objects(canary, KUEUE_DEPLOYMENTS))
    assert {name: d["metadata"]["labels"][QUEUE] for name, d in arms.items()} == {"ft-serve": "default", "ft-base": "default"}
    cpu = make_job(serving={"mode": "merged", "gpus": 0})
    assert QUEUE not in deployments(build_serving_objects(cpu, KUEUE_DEPLOYMENTS))["ft-serve"]["metadata"]["labels"]


def test_the_adapter_pool_is_queued_once_under_its_admins_queue_not_the_jobs() -> None:
    job = make_job(queue={"name": "team-q"}, serving={"mode": "adapter"})
    pool = next(iter(deployments(build_serving_objects(job, KUEUE_DEPLOYMENTS)).values()))
    assert pool["metadata"]["labels"][QUEUE] == "pools" and "kueue.x-k8s.io/priority-class" not in pool["metadata"]["labels"]
    unqueued = OperatorSettings(queue_mode="kueue", kueue_integrations=["batch/job", "deployment"])
    pool = next(iter(deployments(build_serving_objects(job, unqueued)).values()))
    assert QUEUE not in pool["metadata"]["labels"]


def test_an_admitted_evaluation_runs_on_its_flavors_nodes() -> None:
    flavor = Flavor.model_validate({"name": "h100", "nodeLabels": {"gpu": "h100"}, "tolerations": [{"key": "h100", "operator": "Exists"}],
                                    "resources": [{"name": "nvidia.com/gpu", "nominal": "8"}]})
    pod = build_eval_job(make_job(serving={"mode": "merged", "gpus": 1}), OperatorSettings(), flavor=flavor)["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["gpu"] == "h100" and {"key": "h100", "operator": "Exists"} in pod["tolerations"]


def test_the_queue_charges_what_the_pods_request() -> None:
    merged = make_job(serving={"mode": "merged", "gpus": 2, "replicas": 3})
    replica = build_serving_objects(merged, OperatorSettings())[0]["spec"]["template"]["spec"]["containers"][0]
    per_replica = replica["resources"]["requests"]
    assert workload_requests(merged.spec, "Serving")["nvidia.com/gpu"] == 3 * Decimal(per_replica["nvidia.com/gpu"])
    evaluation = build_eval_job(merged, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert workload_requests(merged.spec, "Evaluation")["nvidia.com/gpu"] == Decimal(evaluation["requests"]["nvidia.com/gpu"])
    canary = make_job(serving={"mode": "merged", "gpus": 1, "replicas": 1, "canary": {"weight": 10}})
    assert workload_requests(canary.spec, "Serving")["nvidia.com/gpu"] == 2  # 1 + 1 while the arms are split
    adapter = make_job(serving={"mode": "adapter", "gpus": 1})
    assert workload_requests(adapter.spec, "Serving") == {} and not queued_workload(adapter.spec, "Serving")
    cpu = make_job(serving={"mode": "merged", "gpus": 0})
    assert not queued_workload(cpu.spec, "Evaluation") and not queued_workload(cpu.spec, "Serving")
    assert queued_workload(cpu.spec, "Training")

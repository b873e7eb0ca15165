"""The default judge on the real API server: a `score_model` grader without `endpoint` asks the
namespace's adapter pool for the job's base. Without a ready replica of that pool the job fails before
training, naming the grader; with one (its EndpointSlice) the evaluation Job gets the pool Service's
cluster DNS name, the base's pooled name and the pool's key from its Secret."""

from __future__ import annotations

import pytest

from finetune_api.contract.vllm import pooled_base_name
from finetune_api.job import FineTuneJobSpec
from finetune_operator.builders.names import pool_name
from tests.api.test_operator import ftj
from tests.harness.operator import Operator, PodDriver, get, setup_namespace, wait_for, wait_phase

pytestmark = pytest.mark.api

JUDGE = {"name": "helpful", "type": "score_model", "rubric": "Is the answer helpful?"}


def judged(name: str, namespace: str) -> dict:
    body = ftj(name, evaluation={"graders": [JUDGE], "gates": [{"metric": "exact_match", "min": 0.8}]})
    return {**body, "metadata": {"name": name, "namespace": namespace}}


def test_a_judge_without_endpoint_needs_a_ready_pool_replica_and_then_asks_it(cluster, namespace, operator_kubeconfig,
                                                                              tmp_path):
    setup_namespace(cluster, namespace)
    pods = PodDriver.passing(cluster, namespace)
    # an operator in the cluster (the default addressing): the evaluation Job asks the pool's Service by name
    operator = Operator(operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="none",
                        FT_SERVICE_ADDRESSING="dns").start()
    try:
        cluster.apply(judged("no-pool", namespace))
        failed = wait_phase(cluster, namespace, "no-pool", "Failed", timeout=60)
        assert failed["reason"] == "JudgeEndpointMissing", failed
        assert failed["message"].startswith("spec.evaluation.graders helpful: a score_model grader without `endpoint`")
        assert get(cluster, namespace, "job", "no-pool-train-a0") is None  # refused before training

        spec = FineTuneJobSpec.model_validate(judged("x", namespace)["spec"])
        pool = pool_name(pooled_base_name(spec))  # PREPARED reports no digest
        cluster.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": f"{pool}-a", "namespace": namespace,
                                    "labels": {"kubernetes.io/service-name": pool}},
                       "addressType": "IPv4", "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                       "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": True}}]})
        cluster.apply(judged("pooled", namespace))
        eval_job = wait_for("the evaluation Job", lambda: get(cluster, namespace, "job", "pooled-eval"), timeout=60)
        env = {e["name"]: e for e in eval_job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FT_JUDGE_ENDPOINT"]["value"] == f"http://{pool}.{namespace}.svc:8000/v1"
        assert env["FT_JUDGE_MODEL"]["value"] == pooled_base_name(spec)
        assert env["FT_GRADER_API_KEY_HELPFUL"]["valueFrom"] == {
            "secretKeyRef": {"name": "finetune-serving-api-key", "key": "api-key"}}
    finally:
        pods.close()
        operator.stop()  # also asserts that no call was refused by RBAC (the EndpointSlice list included)

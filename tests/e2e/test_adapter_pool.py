"""Adapters go live in a running vLLM pool (DESIGN.md §5.2), on the test control plane with a real vLLM CPU
server run by the local pod runner.

Two jobs pass their gates one after the other (their prepare, training and evaluation pods end on kwok
nodes with the trainer's typed summaries, `PodDriver`); the operator loads each adapter into the one
running pool replica through vLLM's run-time API, and both answer while the vLLM process never restarts.
The first adapter's directory appears only after the replica refused to load it: the job's Deploying
message names the refused load and its path (the replica is 0/1 ready, its gate down), and the retry
loads it once it is there.
Every call carries the namespace's API key (vLLM refuses one without it). A vLLM process killed mid-way comes back (the pod runner restarts the container) and gets both adapters
again before its readiness gate lets traffic in (and the canary's `/metrics` reader counts exactly the requests
it then answers); a deleted job's adapter disappears from the replica.

The prepare pod reports the base model's real content digest, which keys the pool. Only the pool's pods run on the local runner: the admin's pool definition (`FT_ADAPTER_POOL`) places
them there. The adapters are untrained (peft's B = 0), since what is checked is where they are served,
not what they learned. The claims' mount root is `host_mount_root` (the operator names adapter paths at
run time, which the pod runner cannot map).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from finetune_api import FineTuneJob
from finetune_api.contract.artifacts import tree_digest
from finetune_api.contract.summaries import PrepareSummary
from finetune_operator.builders.names import pool_name
from finetune_operator.builders.serving import adapter_dir
from finetune_operator.reconcile.canary import window
from finetune_operator.runtime.canary import read_metrics
from finetune_operator.settings import OperatorSettings
from finetune_trainer.tiny_model import build_tiny_model
from tests.api.test_operator import ftj
from tests.harness.demo import host_mount_root
from tests.harness.cluster import CACHE_DIR
from tests.harness.operator import SERVING_API_KEY, Operator, PodDriver, get, setup_namespace, wait_for, wait_phase
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS
from tests.harness.summaries import PREPARED, TRAINED, evaluated
from tests.unit.trainer.adapters import untrained_adapter

pytestmark = pytest.mark.e2e

POOL_DEFINITION = {"replicas": 1, "gpus": 0, "cpu": "1", "memory": "4Gi", "maxLoras": 2, "maxCpuLoras": 8,
                   "maxLoraRank": 16, "maxModelLen": 256, "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}
SERVE_TIMEOUT = 300


def adapter_job(name: str, namespace: str) -> dict:
    spec = {"model": {"uri": "pvc://models/tiny-chat", "name": "tiny-chat", "dtype": "float32"},
            "serving": {"mode": "adapter", "gpus": 0}}
    return {**ftj(name, **spec), "metadata": {"name": name, "namespace": namespace}}


def pool_pod(cluster, namespace: str) -> dict:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "finetune.dev/pool",
                                      "-o", "json").stdout)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def vllm_status(pod: dict) -> dict:
    return next(c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c["name"] == "vllm")


def vllm_pid(pod: dict) -> int:
    return int(vllm_status(pod)["containerID"].removeprefix("local://"))


def replica_url(pod: dict) -> str:
    return f"http://{pod['status']['podIP']}:8000/v1"


AUTH = {"Authorization": f"Bearer {SERVING_API_KEY}"}


def listed(url: str) -> set[str]:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/models", headers=AUTH), timeout=30) as response:
        return {m["id"] for m in json.loads(response.read())["data"]}


def answer(url: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi, my invoice is wrong."}],
                       "max_tokens": 4, "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", **AUTH})
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    assert reply["model"] == model, reply
    return reply["choices"][0]["message"]["content"]


def test_adapters_join_a_running_pool_survive_a_restart_and_leave_with_their_job(
        cluster, local_runner, namespace, operator_kubeconfig, tmp_path):
    setup_namespace(cluster, namespace)
    model = build_tiny_model(CACHE_DIR / "models" / "tiny-chat")
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("models", "finetune-artifacts"))
    shutil.copytree(model, mount_root / "models" / "tiny-chat")
    settings = OperatorSettings(pvc_mount_root=str(mount_root))
    alpha_dir, beta_dir = (Path(adapter_dir(FineTuneJob.model_validate(adapter_job(name, namespace)), settings))
                           for name in ("alpha", "beta"))
    untrained_adapter(model, beta_dir)  # alpha's appears only once its refused load was seen

    # the Validating phase reports the base's content digest: the pool is keyed by it, not by the name
    digest = tree_digest(mount_root / "models" / "tiny-chat")
    pool = pool_name("tiny-chat", digest)
    pods = PodDriver(cluster, namespace)
    pods.on("prepare", 0, PrepareSummary(data=PREPARED.data.model_copy(update={"model_digest": digest})))
    pods.on("train", 0, TRAINED)
    pods.on("eval", 0, evaluated(True))
    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log", FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
        FT_PVC_MOUNT_ROOT=str(mount_root), FT_ADAPTER_POOL=json.dumps(POOL_DEFINITION),
    ).start()
    try:
        # 1. the first adapter starts the pool; while its directory is missing the replica refuses to load it
        #    (the gate stays down: the Deployment is 0/1 ready) and the job's status says why, with the path
        cluster.apply(adapter_job("alpha", namespace))
        def refused_load() -> str | None:
            message = ((get(cluster, namespace, "finetunejob", "alpha") or {}).get("status") or {}).get("message") or ""
            return message if "load_lora_adapter alpha" in message else None

        refused = wait_for("alpha's refused load in its status", refused_load, timeout=SERVE_TIMEOUT, interval=1)
        assert "0/1 ready" in refused and str(alpha_dir) in refused, refused
        untrained_adapter(model, alpha_dir)
        alpha = wait_phase(cluster, namespace, "alpha", "Serving", timeout=SERVE_TIMEOUT)
        assert alpha["serving"]["modelNames"] == ["alpha@1", "alpha"], alpha["serving"]
        first = pool_pod(cluster, namespace)
        assert first["metadata"]["labels"]["finetune.dev/pool"] == pool and pool.startswith("vllm-tiny-chat-")
        url, pid, restarts = replica_url(first), vllm_pid(first), vllm_status(first)["restartCount"]
        assert {"alpha@1", "alpha"} <= listed(url)
        with pytest.raises(urllib.error.HTTPError, match="401"):  # the endpoint requires the API key
            urllib.request.urlopen(f"{url}/models", timeout=30)

        # 2. the second joins the running replica: same process, no restart, both answer
        cluster.apply(adapter_job("beta", namespace))
        wait_phase(cluster, namespace, "beta", "Serving", timeout=SERVE_TIMEOUT)
        joined = pool_pod(cluster, namespace)
        assert joined["metadata"]["uid"] == first["metadata"]["uid"]
        assert (vllm_pid(joined), vllm_status(joined)["restartCount"]) == (pid, restarts), vllm_status(joined)
        for name in ("alpha@1", "alpha", "beta@1", "beta"):
            assert answer(url, name)

        # 3. the vLLM process dies; its restarted container gets both adapters before it is Ready again
        os.killpg(pid, signal.SIGKILL)
        wait_for("the vLLM container to restart",
                 lambda: vllm_status(pool_pod(cluster, namespace)).get("restartCount", 0) > restarts, timeout=60)

        def ready_again() -> dict | None:
            pod = pool_pod(cluster, namespace)
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            return pod if conditions.get("Ready") == "True" else None

        restarted = wait_for("the restarted replica to be Ready", ready_again, timeout=SERVE_TIMEOUT, interval=1)
        assert vllm_pid(restarted) != pid
        assert {"alpha@1", "alpha", "beta@1", "beta"} <= listed(url)
        # the canary's reader on this real vLLM's /metrics: exactly these two answers in its window
        before = read_metrics(url.removesuffix("/v1"))
        assert answer(url, "alpha") and answer(url, "beta@1")
        counted = window({"replica": before}, {"replica": read_metrics(url.removesuffix("/v1"))})
        assert (counted.requests, counted.errors, counted.latency[-1][1]) == (2, 0, 2), counted
        assert counted.latency_quantile(0.95) is not None

        # 4. a deleted job's adapter leaves the replica; the other stays
        cluster.kubectl("delete", "finetunejob", "alpha", "-n", namespace, "--wait=false")
        wait_for("alpha to be unloaded", lambda: not ({"alpha@1", "alpha"} & listed(url)), timeout=60)
        assert {"beta@1", "beta"} <= listed(url) and answer(url, "beta")
        assert get(cluster, namespace, "deployment", pool) is not None
    finally:
        for name in ("alpha", "beta"):
            cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=false", check=False)
        pods.close()
        operator.stop()

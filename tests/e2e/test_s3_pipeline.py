"""A job whose base model is in object storage, on the test control plane: one FineTuneJob applied with
kubectl goes Validating → Training → Evaluating → Deploying → Serving, and the endpoint answers
(issue 15, item 5: one zoo model from the object store through the whole pipeline).

The base model (the zoo's Phi-3, the one CI's zoo cell also builds) comes from a private bucket of a
real S3 store (SeaweedFS): the prepare pod's fetch container reads it with the job's Secret into the
source cache, every later pod (training, evaluation, the adapter pool's vLLM) reads the cache entry,
and the Secret's value appears in no object, file or log the project writes.

The operator runs as a process with its least-privilege ServiceAccount; every pod it creates
(prepare Job, training Job, evaluation Job, the pool's vLLM Deployment) is placed on the
`local-runner` node by the operator-wide placement settings and run for real by the local pod runner:
the real trainer for a few steps (what is checked is where the model comes from and that it is
served, not what it learned) and a real vLLM CPU server, into which the operator loads the adapter
at run time. The claims' mount root is `host_mount_root`: the operator names the adapter's directory
in vLLM's load call at run time, which the pod runner cannot map. We then chat with the served
adapter through the address of the serving Service's EndpointSlice, as a client in the cluster would.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_api.contract.sources import SOURCE_CACHE_DIR, cache_path
from finetune_trainer.zoo import build_zoo_model
from tests.harness.cluster import build, missing_binaries
from tests.harness.demo import host_mount_root
from tests.harness.objectstore import ObjectStore
from tests.harness.operator import SERVING_API_KEY, Operator, claim_dir, setup_namespace, status, wait_for
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS
from tests.harness.seasons import SYSTEM, write_seasons

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("FT_CACHE_DIR", REPO / ".cache")) / "models"
MODEL = "zoo-phi3"
TERMINAL = {"Serving", "Succeeded", "Failed", "Rejected"}
BUCKET = "private-models"


@pytest.fixture
def object_store(tmp_path: Path, local_runner):
    """SeaweedFS with a private bucket holding the zoo model, where the runner's pods reach the host."""
    if missing_binaries(["weed"]):
        build()
    store = ObjectStore(tmp_path / "seaweedfs", (BUCKET,), address=local_runner.host_address).start()
    try:
        store.put_tree(BUCKET, MODEL, build_zoo_model(MODEL, MODELS / MODEL))
        yield store
    finally:
        store.stop()


def written_by_the_project(cluster, namespace: str, roots: list[Path]) -> Iterator[tuple[str, bytes]]:
    """Every object in the namespace except Secrets (with the job's status and events), and every file
    under `roots` (claims, pod logs, the operator's log): (where, content)."""
    kinds = "finetunejobs,configmaps,events,jobs,pods,deployments,services,endpointslices"
    yield "objects", cluster.kubectl("get", kinds, "-n", namespace, "-o", "json").stdout.encode()
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            yield str(path), path.read_bytes()


def job_manifest(name: str, namespace: str) -> dict:
    """A user's own data on a claim and the model in a private bucket, as a cluster user writes it; a few
    training steps and no gates (the zoo model is pre-trained briefly: its answers are not the point)."""
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": f"s3://{BUCKET}/{MODEL}", "name": MODEL, "dtype": "float32",
                      "secretRef": {"name": "models-bucket"}},
            "datasets": {
                "train": {"uri": "pvc://data/train.jsonl", "format": "messages"},
                "eval": {"uri": "pvc://data/eval.jsonl", "format": "messages"},
            },
            "hyperparameters": {"maxSteps": 3, "batchSize": 8, "microBatchSize": 8},
            "resources": {"nodes": 1, "gpusPerNode": 0, "processesPerNode": 1, "precision": "fp32",
                          "cpu": "1", "memory": "4Gi"},
            "evaluation": {"metrics": ["exact_match"], "maxNewTokens": 4},
            "serving": {"mode": "adapter", "gpus": 0, "cpu": "1", "memory": "4Gi"},
        },
    }


def chat(address: str, port: int, model: str, content: str) -> dict:
    body = json.dumps({"model": model, "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
        "max_tokens": 4, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://{address}:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {SERVING_API_KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_private_s3_model_to_served_endpoint_on_the_control_plane(cluster, local_runner, namespace, operator_kubeconfig,
                                                          tmp_path, object_store):
    setup_namespace(cluster, namespace)
    secret = object_store.reader.env(object_store.endpoint)
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "models-bucket", "namespace": namespace},
                   "stringData": secret})
    write_seasons(claim_dir(cluster, namespace, "data"), train=24, eval_rows=8)
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("data", "finetune-artifacts"))

    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log",
        FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none", FT_PROGRESS_INTERVAL_SECONDS="5", FT_PVC_MOUNT_ROOT=str(mount_root),
        FT_POD_NODE_SELECTOR=json.dumps(NODE_SELECTOR), FT_POD_TOLERATIONS=json.dumps(TOLERATIONS),
    ).start()
    try:
        cluster.apply(job_manifest("support", namespace))
        seen: list[str] = []

        def settled() -> dict | None:
            current = status(cluster, namespace, "support")
            if current.get("phase") and (not seen or seen[-1] != current["phase"]):
                seen.append(current["phase"])
            return current if current.get("phase") in TERMINAL else None

        final = wait_for("the job to settle", settled, timeout=900, interval=2)
        assert final["phase"] == "Serving", (
            f"phases {seen}; status {json.dumps(final, indent=1)[:3000]}\noperator log:\n{operator.log_tail(40)}")
        assert {"Validating", "Training", "Evaluating"} <= set(seen), seen

        assert final["data"]["trainExamples"] == 24
        identity = final["data"]["sources"]["model"]
        assert identity.startswith(f"s3:{BUCKET}/{MODEL}#sha256:"), final["data"]
        assert final["evaluation"]["passed"] is True
        assert final["progress"]["step"] == final["progress"]["totalSteps"] == 3
        assert final["artifacts"]["adapterDigest"].startswith("sha256:"), final.get("artifacts")

        # the pool's vLLM reads the base from its cache entry (content-addressed), through no job's directory
        pool = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-l", "finetune.dev/pool",
                                          "-o", "json").stdout)["items"]
        args = pool[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        model = args[args.index("--model") + 1]
        assert model == cache_path(str(mount_root / "finetune-artifacts" / SOURCE_CACHE_DIR), identity), args
        assert (Path(model) / "config.json").is_file()

        serving = final["serving"]
        assert serving["readyReplicas"] >= 1 and "support" in serving["modelNames"], serving
        service = serving["endpoint"].split("//", 1)[1].split(".", 1)[0]
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                            f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
        ready = [(endpoint["addresses"][0], port["port"]) for s in slices for endpoint in s.get("endpoints") or []
                 if (endpoint.get("conditions") or {}).get("ready") for port in s.get("ports") or []]
        assert ready, f"no ready endpoint behind Service {service}: {slices}"
        reply = chat(*ready[0], "support", "Today we saw snow near the lake.")
        assert reply["model"] == "support" and reply["choices"][0]["message"]["role"] == "assistant", reply

        # the fetch step held the base for this job; deleting the job releases it (<job>-release)
        hold = mount_root / "finetune-artifacts" / SOURCE_CACHE_DIR / "holders" / f"{namespace}.support.json"
        assert json.loads(hold.read_text()) == [Path(model).parent.name]
        cluster.kubectl("delete", "finetunejob", "support", "-n", namespace, "--wait=true", timeout=120)
        assert not hold.exists(), "deleting the job left its hold on the source cache"
        assert (Path(model) / "config.json").is_file(), "no size limit is set: the entry stays, no longer held"

        roots = [claim_dir(cluster, namespace, c) for c in ("data", "finetune-artifacts")]
        roots += [local_runner.work_dir, tmp_path / "operator.log"]
        leaked = [where for where, content in written_by_the_project(cluster, namespace, roots)
                  if secret["AWS_SECRET_ACCESS_KEY"].encode() in content]
        assert not leaked, f"the Secret's value was written to {leaked}"
    finally:
        # waits for <job>-release (the source-cache hold's finalizer) while the operator still runs
        cluster.kubectl("delete", "finetunejob", "support", "-n", namespace, "--ignore-not-found", "--wait=true",
                        check=False, timeout=120)
        operator.stop()

"""The whole promise on the test control plane: one FineTuneJob applied with kubectl goes Validating →
Training → Evaluating → Deploying → Serving, and the endpoint answers.

The operator runs as a process with its least-privilege ServiceAccount; every pod it creates
(prepare Job, 2-process torchrun training Job, evaluation Job, vLLM Deployment) is placed on the
`local-runner` node by the operator-wide placement settings and run for real by the local pod runner:
the real trainer on the tiny model and a real vLLM CPU server. We then chat with the served adapter
through the address of the serving Service's EndpointSlice, as a client in the cluster would.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from finetune_trainer.tiny_model import LABELS, build_tiny_model
from tests.harness.operator import SERVING_API_KEY, Operator, get, setup_namespace, status, wait_for
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUICKSTART_DATA = REPO / "examples" / "data" / "quickstart"
TERMINAL = {"Serving", "Succeeded", "Failed", "Rejected"}


def claim_dir(cluster, namespace: str, claim: str) -> Path:
    """The host directory of a bound claim (kwok binds `standard` claims to hostPath volumes)."""
    volume = wait_for(f"claim {claim} bound",
                      lambda: ((get(cluster, namespace, "pvc", claim) or {}).get("spec") or {}).get("volumeName"))
    pv = json.loads(cluster.kubectl("get", "pv", volume, "-o", "json").stdout)
    path = Path(pv["spec"]["hostPath"]["path"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_mount_root(cluster, namespace: str, root: Path, claims: tuple[str, ...]) -> Path:
    """A claims mount root whose `<claim>` entries link to the claims' volumes, for `FT_PVC_MOUNT_ROOT`.

    The pod runner maps mount paths only where a pod spec writes them; the operator also names paths at
    run time (an adapter's directory in vLLM's `/v1/load_lora_adapter`). Under this root a pod's path is
    a host path too, so both resolve to the same files."""
    root.mkdir(parents=True, exist_ok=True)
    for claim in claims:
        (root / claim).symlink_to(claim_dir(cluster, namespace, claim), target_is_directory=True)
    return root


def job_manifest(name: str, namespace: str) -> dict:
    """The quickstart's spec with its data and model on claims, as a cluster user writes it."""
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "pvc://models/tiny-chat", "name": "tiny-chat", "dtype": "float32"},
            "datasets": {
                "train": {"uri": "pvc://data/train.jsonl", "format": "messages"},
                "validation": {"uri": "pvc://data/validation.jsonl", "format": "messages"},
                "eval": {"uri": "pvc://data/eval.jsonl", "format": "messages"},
                "maxLength": 128,
            },
            "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
            "hyperparameters": {"epochs": 6, "learningRate": 0.003, "batchSize": 16, "microBatchSize": 8,
                                "warmupRatio": 0.05},
            "resources": {"nodes": 1, "gpusPerNode": 0, "processesPerNode": 2, "precision": "fp32",
                          "cpu": "1", "memory": "4Gi"},
            "evaluation": {"metrics": ["exact_match", "classification"], "maxNewTokens": 8,
                           "gates": [{"metric": "exact_match", "min": 0.8, "minImprovementOverBase": 0.5}]},
            "serving": {"mode": "adapter", "gpus": 0, "maxModelLen": 256, "cpu": "1", "memory": "4Gi"},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0},
        },
    }


def chat(address: str, port: int, model: str, content: str) -> str:
    body = json.dumps({"model": model, "messages": [
        {"role": "system", "content": "Classify the support message as billing, technical, shipping or account."},
        {"role": "user", "content": content}], "max_tokens": 8, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://{address}:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {SERVING_API_KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"].strip()


def test_manifest_to_served_endpoint_on_the_control_plane(cluster, local_runner, namespace, operator_kubeconfig,
                                                          tmp_path):
    setup_namespace(cluster, namespace)
    build_tiny_model(REPO / ".cache" / "models" / "tiny-chat")
    shutil.copytree(REPO / ".cache" / "models" / "tiny-chat", claim_dir(cluster, namespace, "models") / "tiny-chat",
                    dirs_exist_ok=True)
    for split in ("train", "validation", "eval"):
        shutil.copy(QUICKSTART_DATA / f"{split}.jsonl", claim_dir(cluster, namespace, "data"))
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("models", "data", "finetune-artifacts"))

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

        final = wait_for("the job to settle", settled, timeout=1500, interval=2)
        assert final["phase"] == "Serving", (
            f"phases {seen}; status {json.dumps(final, indent=1)[:3000]}\noperator log:\n{operator.log_tail(40)}")
        assert {"Validating", "Training", "Evaluating"} <= set(seen), seen

        assert final["data"]["trainExamples"] == 400
        assert final["evaluation"]["passed"] is True
        exact = next(m for m in final["evaluation"]["metrics"] if m["name"] == "exact_match")
        assert exact["tuned"] >= 0.8 and exact["base"] <= 0.3, exact
        assert final["progress"]["step"] == final["progress"]["totalSteps"] > 0
        assert final["progress"].get("loss") is not None  # the train summary's final loss
        assert final["artifacts"]["adapterDigest"].startswith("sha256:"), final.get("artifacts")

        serving = final["serving"]
        assert serving["readyReplicas"] >= 1 and "support" in serving["modelNames"], serving
        service = serving["endpoint"].split("//", 1)[1].split(".", 1)[0]
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                            f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
        ready = [(endpoint["addresses"][0], port["port"]) for s in slices for endpoint in s.get("endpoints") or []
                 if (endpoint.get("conditions") or {}).get("ready") for port in s.get("ports") or []]
        assert ready, f"no ready endpoint behind Service {service}: {slices}"
        answer = chat(*ready[0], "support", "Hi, my invoice river blue, please help.")
        assert answer == "billing", f"the served adapter answered {answer!r} (labels: {sorted(LABELS)})"
    finally:
        cluster.kubectl("delete", "finetunejob", "support", "-n", namespace, "--wait=false", check=False)
        operator.stop()

"""Multi-node training throughput on the test control plane: two pods with one process each against one
pod with two processes, same data, same spec otherwise (LoRA, DeepSpeed ZeRO-2 over gloo, CPU).

Both run through the operator on the local pod runner, one after the other (never side by side: they
would share the 2 cores). The two-pod run's ranks meet through the headless Service by name (cluster DNS)
and talk TCP over the node's address; the one-pod run's two processes talk over the same gloo transport
inside one pod. The difference is the cost of crossing pods (the network hop) on this machine; on a real
cluster the hop is a real network. tokens/s = the run record's trained tokens / the Trainer's train_runtime.

Prints one JSON object: {two_pods: {...}, one_pod_two_processes: {...}, ratio, load_1m}.
Usage: FT_RUNNER_PASSTHROUGH_ENV=PYTHONPATH OMP_NUM_THREADS=1 .venv/bin/python bench/multinode_throughput.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune_api.contract.summaries import TrainSummary  # noqa: E402
from tests.harness.cluster import start_cluster  # noqa: E402
from tests.harness.operator import Operator, operator_kubeconfig_for, seed_claims, setup_namespace, status, wait_for  # noqa: E402
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS, LocalRunnerProcess  # noqa: E402


TOPOLOGIES = {
    "two_pods": {"nodes": 2, "processesPerNode": 1, "cpuMultiNode": True},
    "one_pod_two_processes": {"nodes": 1, "processesPerNode": 2},
}


def manifest(name: str, namespace: str, topology: dict, epochs: int) -> dict:
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "pvc://models/tiny-chat", "dtype": "float32"},
            "datasets": {"train": {"uri": "pvc://data/train.jsonl", "format": "messages"}, "maxLength": 128},
            "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
            "hyperparameters": {"epochs": epochs, "learningRate": 0.003, "batchSize": 16, "microBatchSize": 8},
            "resources": {"gpusPerNode": 0, "precision": "fp32", "cpu": "1", "memory": "4Gi",
                          "deepspeed": {"zeroStage": 2}, **topology},
            "evaluation": {"enabled": False},
            "serving": {"enabled": False},
        },
    }


def run(cluster, namespace: str, name: str, topology: dict, epochs: int, artifacts: Path) -> dict:
    t0 = time.monotonic()
    cluster.apply(manifest(name, namespace, topology, epochs))
    final = wait_for(f"{name} to finish", lambda: (s := status(cluster, namespace, name)).get("phase") in
                     ("Succeeded", "Failed", "Rejected") and s, timeout=1800, interval=2)
    if final["phase"] != "Succeeded":
        raise SystemExit(f"{name} ended {final['phase']}: {final.get('message')}")
    record = json.loads((artifacts / namespace / name / "run.json").read_text())
    result = TrainSummary.model_validate(record["result"])
    runtime = result.metrics["train_runtime"]
    return {"steps": result.step, "train_tokens": result.train_tokens, "train_runtime_s": round(runtime, 2),
            "tokens_per_s": round(result.train_tokens / runtime, 1), "job_wall_s": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    cluster = start_cluster(work / "controlplane", gpu_nodes=0)
    runner = LocalRunnerProcess.start(cluster, work / "runner")
    operator = Operator(operator_kubeconfig_for(cluster, work), work / "operator.log",
                        FT_CPU_RUNTIME="true", FT_QUEUE_MODE="none",
                        FT_POD_NODE_SELECTOR=json.dumps(NODE_SELECTOR), FT_POD_TOLERATIONS=json.dumps(TOLERATIONS))
    try:
        operator.start()
        namespace = cluster.create_namespace("bench")
        setup_namespace(cluster, namespace)
        artifacts = seed_claims(cluster, namespace, ("train",))
        results = {key: run(cluster, namespace, key.replace("_", "-"), topology, args.epochs, artifacts)
                   for key, topology in TOPOLOGIES.items()}
        results["ratio_two_pods_over_one_pod"] = round(
            results["two_pods"]["tokens_per_s"] / results["one_pod_two_processes"]["tokens_per_s"], 3)
        results["load_1m"] = os.getloadavg()[0]
        print(json.dumps(results, indent=1))
    finally:
        operator.stop()
        runner.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""500 FineTuneJobs at once against the test control plane (kwok): how fast and how cheaply the operator
takes every one of them from creation to Training. Prints one JSON object.

Measured: seconds until every job has its training Job, API requests per job (the operator's own
counters, `finetune_operator_api_requests_total`), operator peak RSS (VmHWM), and p50/p99 latency from
each job's create call to the bench's watch seeing phase Training. Runs the queue in mode `none`
(admission is the queue's own benchmark), the operator as the chart's ServiceAccount.

Usage: python bench/operator_500_jobs.py [--jobs N] [--timeout S]
(`FT_USE_EXISTING_CLUSTER=1 KUBECONFIG=...` reuses a running control plane.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.api.test_operator import ftj  # noqa: E402
from tests.harness.operator import Operator, PodDriver, operator_kubeconfig_for, setup_namespace  # noqa: E402
from tests.harness.cluster import start_from_env  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ft-bench-operator-"))
    cluster = start_from_env(work / "cluster", gpu_nodes=4)
    try:
        from kubernetes import client, watch

        namespace = f"bench-{int(time.time())}"
        cluster.create_namespace(namespace)
        setup_namespace(cluster, namespace)
        pods = PodDriver(cluster, namespace)  # kwok ends a pod only once its outcome is set: every pod succeeds
        op = Operator(operator_kubeconfig_for(cluster, work), work / "operator.log", FT_QUEUE_MODE="none").start()
        api = client.CustomObjectsApi(cluster.api_client())
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch_training() -> None:
            while not stop.is_set():
                try:
                    for event in watch.Watch().stream(api.list_namespaced_custom_object, "finetune.dev", "v1alpha1",
                                                      namespace, "finetunejobs", timeout_seconds=10):
                        obj = event["object"]
                        if (obj.get("status") or {}).get("phase") in ("Training", "Evaluating", "Deploying"):
                            seen.setdefault(obj["metadata"]["name"], time.monotonic())
                        if stop.is_set():
                            return
                except Exception:  # noqa: BLE001 - restart the watch
                    time.sleep(0.2)

        watcher = threading.Thread(target=watch_training, daemon=True)
        watcher.start()
        created: dict[str, float] = {}
        start = time.monotonic()
        for i in range(args.jobs):
            name = f"b{i:04d}"
            api.create_namespaced_custom_object("finetune.dev", "v1alpha1", namespace, "finetunejobs",
                                                {**ftj(name), "metadata": {"name": name}})
            created[name] = time.monotonic()
        create_seconds = time.monotonic() - start
        deadline = start + args.timeout
        while len(seen) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.5)
        all_training = time.monotonic() - start
        stop.set()
        pods.close()
        requests = op.requests()
        rss = peak_rss_mb(op.proc.pid)
        latencies = [seen[n] - created[n] for n in created if n in seen]
        total = sum(requests.values())
        result = {
            "benchmark": "operator_500_jobs",
            "jobs": args.jobs,
            "reached_training": len(seen),
            "create_calls_seconds": round(create_seconds, 2),
            "seconds_until_all_training": round(all_training, 2),
            "api_requests_total": int(total),
            "api_requests_per_job": round(total / args.jobs, 2),
            "api_requests_by_call": {f"{v} {r}": int(n) for (v, r), n in sorted(requests.items())},
            "operator_peak_rss_mb": round(rss, 1),
            "creation_to_training_p50_seconds": round(statistics.median(latencies), 2) if latencies else None,
            "creation_to_training_p99_seconds": round(percentile(latencies, 0.99), 2) if latencies else None,
            "limits": {"api_requests_per_job": 15, "operator_peak_rss_mb": 300},
        }
        op.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        print(json.dumps(result, indent=2))
        ok = len(seen) == args.jobs and result["api_requests_per_job"] <= 15 and rss <= 300
        return 0 if ok else 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

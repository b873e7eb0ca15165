"""One embedded-queue admission cycle over 10,000 waiting jobs (several queues, flavors, priorities).

Prints JSON: cycle time (median of repeats), jobs decided and admitted per second, for a saturated
cluster (few admissions, preemption on) and an empty one (many admissions). Goal: < 200 ms per cycle.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/queue_admission.py [--jobs 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from finetune_operator.queue import FlavorQuota, JobView, QueueView, admission_cycle

GPU = "nvidia.com/gpu"
PRIORITIES = {"batch": 0, "normal": 100, "urgent": 1000}


def make_queues(count: int, gpus_per_flavor: int) -> list[QueueView]:
    flavors = tuple(
        FlavorQuota(name, {GPU: gpus_per_flavor * 1000, "cpu": gpus_per_flavor * 8000, "memory": gpus_per_flavor * 64 * 2**30 * 1000})
        for name in ("h100", "a100", "l40s")
    )
    return [
        QueueView(f"team-{i}", flavors, strategy=("BestEffortFIFO", "StrictFIFO")[i % 2], priorities=PRIORITIES,
                  preempt_lower_priority=i % 2 == 0)
        for i in range(count)
    ]


def make_jobs(rng: random.Random, queues: list[QueueView], pending: int, running: int) -> list[JobView]:
    jobs = []
    for i in range(pending + running):
        queue = queues[i % len(queues)]
        nodes, gpus = rng.choice([1, 1, 1, 2, 4]), rng.choice([1, 2, 4, 8])
        requests = {GPU: nodes * gpus * 1000, "cpu": nodes * gpus * 8000, "memory": nodes * gpus * 64 * 2**30 * 1000}
        job = JobView(f"ns-{i % 50}/job-{i}", f"ns-{i % 50}", queue.name, requests, float(rng.randrange(100000)),
                      "Queued", priority_class=rng.choice([None, *PRIORITIES]))
        if i >= pending:
            flavor = queue.flavors[i % len(queue.flavors)].name
            job = JobView(job.key, job.namespace, job.queue, requests, job.created, "Training", "batch", True,
                          flavor, dict(requests), eta_seconds=rng.randrange(60, 7200))
        jobs.append(job)
    return jobs


def fit_running(queues: list[QueueView], jobs: list[JobView]) -> list[JobView]:
    """Keep only running jobs that fit their flavor, so the starting state is a valid one."""
    used: dict[tuple[str, str], int] = {}
    caps = {(q.name, f.name): f.nominal[GPU] for q in queues for f in q.flavors}
    kept = []
    for job in jobs:
        if job.admitted:
            key = (job.queue, job.flavor)
            if used.get(key, 0) + job.requests[GPU] > caps[key]:
                continue
            used[key] = used.get(key, 0) + job.requests[GPU]
        kept.append(job)
    return kept


def measure(queues: list[QueueView], jobs: list[JobView], repeats: int) -> dict:
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = admission_cycle(queues, jobs)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    seconds = statistics.median(times)
    admitted = len(result.admissions)
    return {
        "jobs": len(jobs),
        "waiting_before": sum(1 for j in jobs if not j.admitted),
        "admitted": admitted,
        "evictions_requested": len(result.evictions),
        "cycle_ms_median": round(seconds * 1000, 1),
        "cycle_ms_max": round(max(times) * 1000, 1),
        "cycle_cpu_ms_median": round(statistics.median(cpu) * 1000, 1),
        "load_average_1m": os.getloadavg()[0],
        "jobs_decided_per_second": round(len(result.jobs) / seconds),
        "jobs_admitted_per_second": round(admitted / seconds),
        "under_200ms": seconds < 0.2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    saturated_queues = make_queues(args.queues, gpus_per_flavor=64)
    saturated = fit_running(saturated_queues, make_jobs(rng, saturated_queues, args.jobs, 400))
    empty_queues = make_queues(args.queues, gpus_per_flavor=4096)
    empty = make_jobs(rng, empty_queues, args.jobs, 0)
    print(json.dumps({
        "benchmark": "queue_admission",
        "saturated": measure(saturated_queues, saturated, args.repeats),
        "empty_cluster": measure(empty_queues, empty, args.repeats),
    }, indent=2))


if __name__ == "__main__":
    main()

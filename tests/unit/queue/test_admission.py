"""Properties of one admission cycle, over random queues and random histories of jobs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_api.common import LabelSelector
from finetune_operator.queue import FlavorQuota, JobView, QueueView, admission_cycle, apply_decisions
from finetune_operator.queue.admission import CycleResult

pytestmark = pytest.mark.unit

GPU = "nvidia.com/gpu"
PRIORITIES = {"low": 0, "mid": 5, "high": 10}
NAMESPACE_LABELS = {"team-a": {"team": "a"}, "team-b": {"team": "b"}}


@st.composite
def queues(draw: st.DrawFn, name: str = "q") -> QueueView:
    flavors = []
    for index in range(draw(st.integers(1, 3))):
        nominal = {GPU: draw(st.integers(0, 16)) * 1000}
        if draw(st.booleans()):
            nominal["cpu"] = draw(st.integers(0, 96)) * 1000
        flavors.append(FlavorQuota(f"f{index}", nominal))
    selector = draw(st.sampled_from([None, LabelSelector(match_labels={"team": "a"})]))
    return QueueView(
        name=name,
        flavors=tuple(flavors),
        strategy=draw(st.sampled_from(["StrictFIFO", "BestEffortFIFO"])),
        priorities=PRIORITIES,
        default_priority=draw(st.sampled_from([0, 5])),
        preempt_lower_priority=draw(st.booleans()),
        namespace_selector=selector,
    )


@st.composite
def new_jobs(draw: st.DrawFn, count: int, queue_names: list[str]) -> list[JobView]:
    jobs = []
    for index in range(count):
        nodes = draw(st.integers(1, 4))
        gpus = draw(st.integers(0, 4))
        requests = {"cpu": nodes * (8 * gpus or 2) * 1000}
        if gpus:
            requests[GPU] = nodes * gpus * 1000
        namespace = draw(st.sampled_from(sorted(NAMESPACE_LABELS)))
        jobs.append(
            JobView(
                key=f"{namespace}/job-{index}",
                namespace=namespace,
                queue=draw(st.sampled_from(queue_names)),
                requests=requests,
                created=float(draw(st.integers(0, 20))),
                phase=draw(st.sampled_from(["Queued", "Queued", "Queued", "Validating", "Pending"])),
                priority_class=draw(st.sampled_from([None, "low", "mid", "high"])),
            )
        )
    return jobs


def priority(queue: QueueView, job: JobView) -> int:
    return queue.priorities[job.priority_class] if job.priority_class else queue.default_priority


def order(queue: QueueView, job: JobView) -> tuple:
    return (-priority(queue, job), job.created, job.key)


def advance(draw: st.DrawFn, jobs: list[JobView]) -> list[JobView]:
    """What the job handler does between cycles: start, finish, evict, validate."""
    out = []
    for job in jobs:
        step = draw(st.sampled_from(["stay", "stay", "advance"]))
        if step == "advance":
            if job.admitted and job.eviction_requested:
                job = replace(job, admitted=False, eviction_requested=False, flavor=None, held={}, phase="Queued")
            elif job.admitted and job.phase == "Queued":
                job = replace(job, phase="Training", eta_seconds=draw(st.sampled_from([None, 60, 600])))
            elif job.phase == "Training":
                # a GPU evaluation asks for its own admission (the training's is released in the same write)
                gpu_eval = draw(st.booleans())
                job = replace(job, phase="Evaluating", **({"workload": "Evaluation", "admitted": False, "flavor": None,
                                                            "held": {}} if gpu_eval else {}))
            elif job.admitted and job.phase == "Evaluating":
                job = replace(job, phase="Deploying", workload="Serving", admitted=False, flavor=None, held={})
            elif job.admitted and job.phase == "Deploying":
                job = replace(job, phase=draw(st.sampled_from(["Serving", "Succeeded", "Failed"])))
            elif job.phase in ("Pending", "Validating"):
                job = replace(job, phase="Queued")
        out.append(job)
    return out


def check_invariants(queue_list: list[QueueView], jobs: list[JobView], result: CycleResult) -> None:
    by_name = {q.name: q for q in queue_list}
    before = {j.key: j for j in jobs}
    after = apply_decisions(jobs, result)
    for queue in queue_list:
        for flavor in queue.flavors:
            for resource, cap in flavor.nominal.items():
                held = sum(j.holding.get(resource, 0) for j in after if j.holds_quota and j.queue == queue.name and j.flavor == flavor.name)
                assert held <= cap, f"{queue.name}/{flavor.name} over-admits {resource}: {held} > {cap}"
    for key, decision in result.jobs.items():
        job = before[key]
        if decision.newly_admitted:
            queue = by_name[job.queue]
            assert job.waiting, f"{key} admitted in phase {job.phase} for {job.workload}"
            assert decision.resources == job.requests, "a gang is admitted whole"
            assert queue.namespace_selector is None or job.namespace == "team-a"
        if decision.eviction_requested and not job.eviction_requested:
            queue = by_name[job.queue]
            assert job.workload == "Training", f"{key}'s {job.workload} evicted: only training checkpoints"
            assert queue.preempt_lower_priority
            preemptors = [
                before[k] for k, d in result.jobs.items()
                if d.position is not None and key in d.message and before[k].queue == job.queue
            ]
            assert preemptors, f"{key} evicted with no preemptor"
            preemptor = preemptors[0]
            assert priority(queue, preemptor) > priority(queue, job), "only strictly lower priority is preempted"
            flavor = next(f for f in queue.flavors if f.name == job.flavor)
            staying = [j for j in after if j.holds_quota and j.queue == queue.name and j.flavor == flavor.name and not j.eviction_requested]
            for resource, cap in flavor.nominal.items():
                assert sum(j.holding.get(resource, 0) for j in staying) + preemptor.requests.get(resource, 0) <= cap, "preemption makes room"
    for queue in queue_list:
        admitted = [before[k] for k, d in result.jobs.items() if d.newly_admitted and before[k].queue == queue.name]
        waiting = [before[k] for k, d in result.jobs.items() if d.position is not None and before[k].queue == queue.name]
        for a in admitted:
            for w in waiting:
                if order(queue, w) < order(queue, a):
                    assert queue.strategy == "BestEffortFIFO", f"StrictFIFO admitted {a.key} past {w.key}"
                    smaller = all(w.requests.get(r, 0) <= a.requests.get(r, 0) for r in set(w.requests) | set(a.requests))
                    assert not smaller, f"{w.key} is ahead of {a.key} and no larger, yet waits"
        positions = sorted((result.jobs[w.key].position, order(queue, w)) for w in waiting)
        assert [p for p, _ in positions] == list(range(1, len(waiting) + 1))
        assert [o for _, o in positions] == sorted(o for _, o in positions), "positions follow priority then age"


def before_phase(jobs: list[JobView], key: str) -> str:
    return next(j.phase for j in jobs if j.key == key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cycles_over_a_random_history_keep_every_invariant(data: st.DataObject) -> None:
    queue_list = [data.draw(queues("q")), data.draw(queues("r"))]
    jobs = data.draw(new_jobs(data.draw(st.integers(0, 18)), ["q", "r", "missing"]))
    for _ in range(data.draw(st.integers(1, 5))):
        result = admission_cycle(queue_list, jobs, NAMESPACE_LABELS)
        check_invariants(queue_list, jobs, result)
        restarted = admission_cycle(queue_list, apply_decisions(jobs, result), NAMESPACE_LABELS)
        assert not restarted.admissions, "a restarted operator never admits twice"
        for key, decision in result.jobs.items():
            again = restarted.jobs.get(key)
            if again is None:
                assert not decision.admitted and before_phase(jobs, key) != "Queued", f"{key} dropped after a restart"
                continue
            assert (again.admitted, again.flavor, again.resources, again.eviction_requested, again.position) == (
                decision.admitted, decision.flavor, decision.resources, decision.eviction_requested, decision.position
            ), f"{key} decided differently after a restart"
        jobs = advance(data.draw, apply_decisions(jobs, result))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_best_effort_leaves_no_waiting_job_that_fits(data: st.DataObject) -> None:
    queue = replace(data.draw(queues()), strategy="BestEffortFIFO", preempt_lower_priority=False)
    jobs = data.draw(new_jobs(data.draw(st.integers(0, 15)), ["q"]))
    result = admission_cycle([queue], jobs, NAMESPACE_LABELS)
    summary = result.queues["q"]
    for key, decision in result.jobs.items():
        if decision.position is None:
            continue
        job = next(j for j in jobs if j.key == key)
        for flavor in queue.flavors:
            free = {r: cap - summary.usage[flavor.name].get(r, 0) for r, cap in flavor.nominal.items()}
            assert not all(job.requests.get(r, 0) <= free[r] for r in free if job.requests.get(r, 0) > 0) or any(
                r not in flavor.nominal and r in queue.managed for r in job.requests
            ), f"{key} waits though flavor {flavor.name} has room"


def job(name: str, gpus: int, created: float, phase: str = "Queued", **kw) -> JobView:
    return JobView(f"ns/{name}", "ns", kw.pop("queue", "q"), {GPU: gpus * 1000}, created, phase, **kw)


def one_flavor(gpus: int, **kw) -> QueueView:
    return QueueView("q", (FlavorQuota("a100", {GPU: gpus * 1000}),), priorities=PRIORITIES, **kw)


def test_strict_fifo_blocks_behind_the_head_where_best_effort_backfills() -> None:
    running = job("running", 6, 0, "Training", admitted=True, flavor="a100", held={GPU: 6000})
    jobs = [running, job("big", 4, 1), job("small", 2, 2)]
    strict = admission_cycle([one_flavor(8, strategy="StrictFIFO")], jobs)
    best = admission_cycle([one_flavor(8, strategy="BestEffortFIFO")], jobs)
    assert strict.admissions == []
    assert strict.jobs["ns/small"].position == 2 and "waiting behind ns/big" in strict.jobs["ns/small"].message
    assert best.admissions == ["ns/small"]
    assert best.jobs["ns/big"].position == 1


def test_a_gang_is_admitted_whole_or_not_at_all() -> None:
    result = admission_cycle([one_flavor(8)], [job("gang", 12, 0), job("fits", 8, 1)])
    assert "more than any flavor" in result.jobs["ns/gang"].message
    assert result.jobs["ns/gang"].position is None
    assert result.admissions == ["ns/fits"] and result.jobs["ns/fits"].resources == {GPU: 8000}


def test_first_fit_goes_to_the_next_flavor_when_the_first_is_full() -> None:
    queue = QueueView("q", (FlavorQuota("h100", {GPU: 4000}), FlavorQuota("a100", {GPU: 8000})))
    result = admission_cycle([queue], [job("a", 4, 0), job("b", 4, 1), job("c", 4, 2)])
    assert [result.jobs[f"ns/{n}"].flavor for n in "abc"] == ["h100", "a100", "a100"]


def test_a_flavor_without_the_requested_gpu_is_never_chosen() -> None:
    queue = QueueView("q", (FlavorQuota("cpu-only", {"cpu": 64000}), FlavorQuota("gpu", {GPU: 8000, "cpu": 64000})))
    result = admission_cycle([queue], [JobView("ns/j", "ns", "q", {GPU: 2000, "cpu": 16000}, 0, "Queued")])
    assert result.jobs["ns/j"].flavor == "gpu"


def test_a_flavor_that_does_not_list_a_resource_the_queue_limits_does_not_provide_it() -> None:
    queue = QueueView("q", (FlavorQuota("gpu", {GPU: 8000}), FlavorQuota("cpu-only", {"cpu": 64000})))
    result = admission_cycle([queue], [JobView("ns/j", "ns", "q", {GPU: 2000, "cpu": 16000}, 0, "Queued")])
    assert "more than any flavor of FineTuneQueue q provides" in result.jobs["ns/j"].message


def test_preemption_evicts_the_lowest_priority_and_reserves_the_room() -> None:
    queue = one_flavor(8, preempt_lower_priority=True)
    jobs = [
        job("low", 4, 0, "Training", admitted=True, flavor="a100", held={GPU: 4000}, priority_class="low"),
        job("mid", 4, 1, "Training", admitted=True, flavor="a100", held={GPU: 4000}, priority_class="mid"),
        job("urgent", 4, 2, priority_class="high"),
        job("filler", 4, 3, priority_class="low"),
    ]
    first = admission_cycle([queue], jobs)
    assert first.evictions == ["ns/low"] and "preempting ns/low" in first.jobs["ns/urgent"].message
    assert first.jobs["ns/filler"].position == 2
    evicted = [replace(j, admitted=False, eviction_requested=False, flavor=None, held={}, phase="Queued") if j.key == "ns/low" else j
               for j in apply_decisions(jobs, first)]
    second = admission_cycle([queue], evicted)
    assert second.admissions == ["ns/urgent"] and second.evictions == []
    assert second.jobs["ns/low"].position == 1 and not second.jobs["ns/low"].eviction_requested


def test_equal_priority_is_never_preempted() -> None:
    queue = one_flavor(4, preempt_lower_priority=True)
    jobs = [job("a", 4, 0, "Training", admitted=True, flavor="a100", held={GPU: 4000}, priority_class="mid"),
            job("b", 4, 1, priority_class="mid")]
    assert admission_cycle([queue], jobs).evictions == []


def test_quota_is_released_when_training_ends() -> None:
    jobs = [job("done", 8, 0, "Evaluating", admitted=True, flavor="a100", held={GPU: 8000}), job("next", 8, 1)]
    result = admission_cycle([one_flavor(8)], jobs)
    assert not result.jobs["ns/done"].admitted and result.jobs["ns/done"].message == "training ended; quota released"
    assert result.admissions == ["ns/next"]


def test_namespace_priority_class_and_missing_queue_are_explained() -> None:
    queue = one_flavor(8, namespace_selector=LabelSelector(match_labels={"team": "a"}))
    jobs = [
        JobView("team-b/j", "team-b", "q", {GPU: 1000}, 0, "Queued"),
        JobView("team-a/k", "team-a", "q", {GPU: 1000}, 0, "Queued", priority_class="urgent"),
        JobView("team-a/m", "team-a", "nope", {GPU: 1000}, 0, "Queued"),
    ]
    result = admission_cycle([queue], jobs, NAMESPACE_LABELS)
    assert "namespace team-b does not match the namespaceSelector" in result.jobs["team-b/j"].message
    assert "spec.queue.priorityClass: urgent is not a priority class" in result.jobs["team-a/k"].message
    assert result.jobs["team-a/m"].message == "FineTuneQueue nope does not exist"
    assert result.admissions == []


def test_wait_estimates_follow_the_running_jobs_eta() -> None:
    jobs = [
        job("r1", 4, 0, "Training", admitted=True, flavor="a100", held={GPU: 4000}, eta_seconds=300),
        job("r2", 4, 0, "Training", admitted=True, flavor="a100", held={GPU: 4000}, eta_seconds=900),
        job("w1", 4, 1),
        job("w2", 4, 2),
        job("w3", 4, 3),
    ]
    result = admission_cycle([one_flavor(8)], jobs)
    assert [result.jobs[f"ns/w{i}"].wait_estimate_seconds for i in (1, 2, 3)] == [300, 900, None]
    assert result.queues["q"].admitted == 2 and result.queues["q"].pending == 3


def test_evaluation_and_serving_hold_quota_while_they_run_and_are_never_evicted() -> None:
    """A job holds one admission at a time: its serving replicas while it serves (a canary rolled back
    still serves in Rejected), its evaluation Job while it evaluates; a waiting training fits only into
    what they leave, and preemption never takes their quota (no checkpoint to resume from)."""
    queue = one_flavor(8, preempt_lower_priority=True)
    serving = job("serving", 4, 0, "Serving", admitted=True, flavor="a100", held={GPU: 4000}, workload="Serving",
                  priority_class="low")
    rolled_back = job("rolled-back", 2, 0, "Rejected", admitted=True, flavor="a100", held={GPU: 2000},
                      workload="Serving", priority_class="low")
    evaluating = job("evaluating", 2, 0, "Evaluating", admitted=True, flavor="a100", held={GPU: 2000},
                     workload="Evaluation", priority_class="low")
    urgent = job("urgent", 2, 1, priority_class="high")
    result = admission_cycle([queue], [serving, rolled_back, evaluating, urgent])
    assert result.admissions == [] and result.evictions == []
    assert result.jobs["ns/urgent"].position == 1 and "waiting for quota" in result.jobs["ns/urgent"].message
    assert result.queues["q"].usage["a100"][GPU] == 8000
    stopped = replace(serving, phase="Succeeded")  # serving disabled: the replicas are gone
    result = admission_cycle([queue], [stopped, rolled_back, evaluating, urgent])
    assert result.admissions == ["ns/urgent"]
    assert not result.jobs["ns/serving"].admitted and result.jobs["ns/serving"].message == "serving ended; quota released"
    deleted = [rolled_back, evaluating, urgent]  # a deleted job is simply not there any more
    assert admission_cycle([queue], deleted).admissions == ["ns/urgent"]


def test_a_waiting_evaluation_is_ordered_with_training_by_priority_then_age() -> None:
    holder = job("holder", 6, 0, "Training", admitted=True, flavor="a100", held={GPU: 6000})
    evaluation = job("trained", 2, 1, "Evaluating", workload="Evaluation")
    later = job("later", 2, 2)
    result = admission_cycle([one_flavor(8)], [holder, evaluation, later])
    assert result.admissions == ["ns/trained"] and result.jobs["ns/trained"].workload == "Evaluation"
    assert result.jobs["ns/later"].position == 1
    cpu_only = job("cpu-eval", 0, 1, "Evaluating")  # never asked: its status.queue is still training's, released
    assert "ns/cpu-eval" not in admission_cycle([one_flavor(8)], [cpu_only]).jobs


def test_serving_that_asks_more_replicas_grows_its_admission_in_place() -> None:
    """A `spec.serving` change asking 4 GPUs where 2 are held: the job keeps its 2 (the current replicas
    keep serving) and waits in line for 2 more in its own flavor; never evicts anyone for them."""
    queue = one_flavor(4, preempt_lower_priority=True)
    grower = job("srv", 4, 0, "Deploying", admitted=True, flavor="a100", held={GPU: 2000}, workload="Serving",
                 priority_class="high")
    other = job("other", 1, 1, "Training", admitted=True, flavor="a100", held={GPU: 1000}, priority_class="low")
    result = admission_cycle([queue], [grower, other])
    waiting = result.jobs["ns/srv"]
    assert waiting.admitted and waiting.resources == {GPU: 2000} and waiting.position == 1
    assert waiting.message == ("position 1 in FineTuneQueue q: waiting for quota to grow by nvidia.com/gpu 2 "
                               "(holding nvidia.com/gpu 2)")
    assert result.evictions == [] and result.queues["q"].usage["a100"][GPU] == 3000
    grown = admission_cycle([queue], [grower]).jobs["ns/srv"]
    assert grown.admitted and grown.resources == {GPU: 4000} and not grown.newly_admitted  # admittedAt kept
    assert not apply_decisions([grower], admission_cycle([queue], [grower]))[0].growth  # once grown, nothing more asked
    too_big = replace(grower, requests={GPU: 6000})
    kept = admission_cycle([queue], [too_big]).jobs["ns/srv"]
    assert kept.admitted and kept.resources == {GPU: 2000} and "more than flavor a100" in kept.message
    serving = replace(grower, phase="Serving")  # growth is asked only by a deploy, never by a running endpoint
    assert admission_cycle([queue], [serving]).jobs["ns/srv"].resources == {GPU: 2000}


def test_serving_that_asks_fewer_replicas_gives_the_rest_back_as_it_deploys_again() -> None:
    shrinking = job("srv", 2, 0, "Deploying", admitted=True, flavor="a100", held={GPU: 4000}, workload="Serving")
    result = admission_cycle([one_flavor(4)], [shrinking, job("next", 2, 1)])
    assert result.jobs["ns/srv"].resources == {GPU: 2000} and result.admissions == ["ns/next"]

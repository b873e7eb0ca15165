"""One admission cycle of the embedded queue, as a pure function (DESIGN.md §6).

Queues and jobs in, decisions out: which waiting jobs are admitted into which flavor, which running jobs
are asked to make room (preemption), and each waiting job's position and wait estimate. The cycle keeps
no state of its own: quota in use is what the jobs' status says they hold, so running it again after a
restart gives the same decisions and never admits a job twice.

Rules:
- Candidates are workloads that wait: training in phase `Queued` (validation has passed), and an
  evaluation (`Evaluating`) or serving (`Deploying`) that asked for admission because it requests
  accelerators. A workload is admitted whole (every node's or replica's GPUs, cpu and memory at once)
  into the first flavor with room for all of it; a job holds at most one admission at a time. A serving
  admission that deploys again after a `spec.serving` change is resized in place: asking more, it keeps
  what it holds and waits in line for the difference in its flavor (never preempting); asking less, it
  keeps only its new requests.
- Adapter pools are consumers too (`views.pool_views`): serving workloads keyed `pool/<ns>/<name>`.
- Order: priority (higher first), then age (older first), then name.
- Resources that no flavor of the queue lists are not limited by it; a job that needs a listed resource is
  admitted only into a flavor that lists it.
- StrictFIFO: a job that does not fit blocks every job behind it. BestEffortFIFO: jobs behind it that fit
  are admitted. A job that can never fit (larger than every flavor) blocks nobody and says why.
- Preemption (`LowerPriority`): a job that does not fit may ask training of strictly lower priority in the
  same queue and flavor to leave (evaluation and serving are never evicted), only if their quota makes
  room for it; the fewest, lowest-priority, most
  recently admitted go first. The quota it waits for is reserved, so no one else takes it meanwhile.
"""

from __future__ import annotations

import bisect
import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .requests import format_quantity, from_milli
from .selector import selector_matches
from .views import Amounts, JobView, QueueView


@dataclass(slots=True)
class JobDecision:
    """The desired `status.queue` of one job after the cycle."""

    key: str
    queue: str
    admitted: bool
    flavor: str | None = None
    resources: Amounts = field(default_factory=dict)
    position: int | None = None
    wait_estimate_seconds: int | None = None
    message: str = ""
    eviction_requested: bool = False
    newly_admitted: bool = False
    workload: str = "Training"


@dataclass(frozen=True)
class QueueSummary:
    """A queue's state after the cycle, for its status and `kubectl get ftq`."""

    name: str
    nominal: dict[str, Amounts]
    usage: dict[str, Amounts]
    """Flavor → resource → amount held (admissions of this cycle included)."""
    admitted: int
    pending: int


@dataclass
class CycleResult:
    """Everything one cycle decided."""

    jobs: dict[str, JobDecision] = field(default_factory=dict)
    queues: dict[str, QueueSummary] = field(default_factory=dict)

    @property
    def admissions(self) -> list[str]:
        """Jobs admitted in this cycle."""
        return [k for k, d in self.jobs.items() if d.newly_admitted]

    @property
    def evictions(self) -> list[str]:
        """Jobs asked to leave (this cycle or before) that still hold quota."""
        return [k for k, d in self.jobs.items() if d.eviction_requested and d.admitted]


def admission_cycle(
    queues: Iterable[QueueView],
    jobs: Iterable[JobView],
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> CycleResult:
    """Run one admission cycle over every queue; jobs that are neither waiting nor admitted are ignored."""
    by_name = {q.name: q for q in queues}
    grouped: dict[str, list[JobView]] = defaultdict(list)
    result = CycleResult()
    for job in jobs:
        if job.queue in by_name:
            grouped[job.queue].append(job)
        elif job.holds_quota:
            result.jobs[job.key] = _held(job, f"FineTuneQueue {job.queue} no longer exists; admission kept")
        elif job.waiting:
            result.jobs[job.key] = JobDecision(job.key, job.queue, False, message=f"FineTuneQueue {job.queue} does not exist",
                                               workload=job.workload)
    for queue in by_name.values():
        _QueueCycle(queue, grouped[queue.name], namespace_labels or {}).run(result)
    return result


def describe(amounts: Amounts) -> str:
    """`nvidia.com/gpu 8, cpu 64, memory 512Gi` — amounts for people."""
    return _describe(tuple(sorted(amounts.items())))


@functools.lru_cache(maxsize=4096)
def _describe(items: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name} {format_quantity(from_milli(value))}" for name, value in items)


def _held(job: JobView, message: str, eviction: bool | None = None) -> JobDecision:
    return JobDecision(
        job.key,
        job.queue,
        True,
        flavor=job.flavor,
        resources=dict(job.kept),
        message=message,
        eviction_requested=job.eviction_requested if eviction is None else eviction,
        workload=job.workload,
    )


def _grown(job: JobView) -> Amounts:
    """What a job holds once its growth is admitted: the larger of what it held and what it requests."""
    held = job.holding
    return {name: max(held.get(name, 0), job.requests.get(name, 0)) for name in {*held, *job.requests}}


Vector = list[int]
"""Amounts of the queue's managed resources, in a fixed order (fast arithmetic over a few resources)."""


def _fits(need: Vector, used: Vector, cap: Vector) -> bool:
    """Room for the whole request beside what is used (a resource the flavor does not list has cap 0)."""
    return all(n <= 0 or u + n <= c for n, u, c in zip(need, used, cap))


def _plus(into: Vector, amounts: Vector, sign: int = 1) -> None:
    for i, value in enumerate(amounts):
        into[i] += sign * value


class _QueueCycle:
    """The cycle of one queue; lives for one call of `admission_cycle`."""

    def __init__(self, queue: QueueView, jobs: list[JobView], namespace_labels: Mapping[str, Mapping[str, str]]):
        self.queue = queue
        self.jobs = jobs
        self.namespace_labels = namespace_labels
        self.resources = sorted(queue.managed)
        self.names = [f.name for f in queue.flavors]
        self.cap = {f.name: self.vector(f.nominal) for f in queue.flavors}
        self.used: dict[str, Vector] = {name: [0] * len(self.resources) for name in self.names}
        self.releasing: dict[str, Vector] = {name: [0] * len(self.resources) for name in self.names}
        self.reserved: dict[str, Vector] = {name: [0] * len(self.resources) for name in self.names}
        self.committed: dict[str, Vector] = {}
        """Used plus reserved, per flavor: what a plain admission must fit beside."""
        self.holders: dict[str, list[JobView]] = defaultdict(list)
        self.evicting: set[str] = set()
        self.need: dict[str, Vector] = {}
        self.zero = [0] * len(self.resources)
        self._freeable: dict[tuple[str, int], Vector] = {}

    def _frees_in(self, holder: JobView) -> int | None:
        """Seconds until a holder's resources come back: its grace period when evicted, else its ETA."""
        return self.queue.grace_period_seconds if holder.key in self.evicting else holder.eta_seconds

    def vector(self, amounts: Amounts) -> Vector:
        return [amounts.get(name, 0) for name in self.resources]

    def request(self, job: JobView) -> Vector:
        """What the job asks now: its whole request, or what a held serving admission lacks (`growth`)."""
        need = self.need.get(job.key)
        if need is None:
            need = self.need[job.key] = self.vector(job.growth or job.requests)
        return need

    def priority(self, job: JobView) -> int:
        if job.priority_class is None:
            return self.queue.default_priority
        return self.queue.priorities.get(job.priority_class, self.queue.default_priority)

    def run(self, result: CycleResult) -> None:
        decisions = result.jobs
        for job in self.jobs:
            if job.holds_quota:
                self.holders[job.flavor or ""].append(job)
                if job.flavor and job.flavor in self.used:
                    # Quota in use is what the holders' status says they hold (a restart rebuilds it).
                    held = self.vector(job.kept)
                    _plus(self.used[job.flavor], held)
                    if job.eviction_requested:
                        _plus(self.releasing[job.flavor], held)
                if job.eviction_requested:
                    self.evicting.add(job.key)
                    decisions[job.key] = _held(job, "preempted by a higher-priority job: checkpointing, then evicted")
                else:
                    decisions[job.key] = _held(job, f"admitted to flavor {job.flavor}")
            elif job.admitted:
                decisions[job.key] = JobDecision(job.key, job.queue, False, workload=job.workload,
                                                 message=f"{job.workload.lower()} ended; quota released")
        self.committed = {name: list(self.used[name]) for name in self.names}
        admissible = []
        for job in self.jobs:
            if not (job.waiting or job.growth):
                continue
            reason = self.inadmissible(job)
            if reason and job.growth:
                decisions[job.key] = _held(job, reason)
            elif reason:
                decisions[job.key] = JobDecision(job.key, job.queue, False, message=reason, workload=job.workload)
            else:
                admissible.append(job)
        admissible.sort(key=lambda j: (-self.priority(j), j.created, j.key))
        waiting: list[tuple[JobView, str]] = []
        blocked_by: JobView | None = None
        strict = self.queue.strategy == "StrictFIFO"
        for job in admissible:
            if blocked_by is not None:
                waiting.append((job, f"StrictFIFO: waiting behind {blocked_by.key}"))
                continue
            flavor = self.first_fit(self.request(job), job.flavor if job.growth else None)
            if flavor is not None:
                _plus(self.used[flavor], self.request(job))
                _plus(self.committed[flavor], self.request(job))
                decisions[job.key] = JobDecision(
                    job.key, job.queue, True, flavor=flavor, resources=_grown(job),
                    message=f"admitted to flavor {flavor}", newly_admitted=not job.growth, workload=job.workload,
                )
                continue
            preempting = self.queue.preempt_lower_priority and not job.growth  # a held admission grows in place
            victims = self.preempt(job, decisions) if preempting else None
            if victims is None and job.growth:
                waiting.append((job, f"waiting for quota to grow by {describe(job.growth)} (holding {describe(job.holding)})"))
            elif victims is None:
                waiting.append((job, f"waiting for quota: needs {describe(job.requests)}"))
            elif victims:
                waiting.append((job, f"preempting {', '.join(v.key for v in victims)} to make room"))
            else:
                waiting.append((job, "waiting for preempted jobs to release their quota"))
            if strict:
                blocked_by = job
        estimates = self.wait_estimates([job for job, _ in waiting])
        name = self.queue.name
        for position, ((job, why), wait) in enumerate(zip(waiting, estimates), start=1):
            message = f"position {position} in FineTuneQueue {name}: {why}"
            if job.growth:  # it keeps what it holds while it waits for more
                decisions[job.key] = replace(_held(job, message), position=position, wait_estimate_seconds=wait)
                continue
            decisions[job.key] = JobDecision(
                job.key, job.queue, False, position=position, wait_estimate_seconds=wait,
                message=message, workload=job.workload,
            )
        result.queues[name] = QueueSummary(
            name=name,
            nominal={f.name: dict(f.nominal) for f in self.queue.flavors},
            usage={f: dict(zip(self.resources, self.used[f])) for f in self.names},
            admitted=sum(1 for j in self.jobs if decisions.get(j.key) and decisions[j.key].admitted),
            pending=sum(1 for j in self.jobs if decisions.get(j.key) and not decisions[j.key].admitted and j.waiting),
        )

    def inadmissible(self, job: JobView) -> str | None:
        """Why the job can never be admitted by this queue as it is, or None."""
        name = self.queue.name
        if not selector_matches(self.queue.namespace_selector, self.namespace_labels.get(job.namespace, {})):
            return f"namespace {job.namespace} does not match the namespaceSelector of FineTuneQueue {name}"
        if job.priority_class is not None and job.priority_class not in self.queue.priorities:
            known = ", ".join(sorted(self.queue.priorities)) or "none"
            return f"spec.queue.priorityClass: {job.priority_class} is not a priority class of FineTuneQueue {name} (known: {known})"
        if job.growth:
            if not _fits(self.vector(job.requests), self.zero, self.cap.get(job.flavor or "", self.zero)):
                return f"needs {describe(job.requests)}: more than flavor {job.flavor} of FineTuneQueue {name} provides"
            return None
        if not any(_fits(self.request(job), self.zero, self.cap[f]) for f in self.names):
            return f"needs {describe(job.requests)}: more than any flavor of FineTuneQueue {name} provides"
        return None

    def first_fit(self, need: Vector, only: str | None = None) -> str | None:
        """The first flavor (or only flavor `only`) with room for `need` beside what is committed."""
        for name in self.names:
            if (only is None or name == only) and _fits(need, self.committed[name], self.cap[name]):
                return name
        return None

    def preempt(self, job: JobView, decisions: dict[str, JobDecision]) -> list[JobView] | None:
        """Ask the fewest lower-priority jobs of one flavor to leave so `job` fits; reserve its quota there.

        Returns the new victims (empty when quota already being released is enough), or None when no
        flavor can make room.
        """
        priority = self.priority(job)
        need = self.request(job)
        for name in self.names:
            if not _fits(need, self.freeable(name, priority), self.cap[name]):
                continue
            base = self.after_release(name)
            candidates = [h for h in self.holders[name] if self._evictable(h, priority)]
            candidates.sort(key=lambda h: (h.admitted_at, h.created, h.key), reverse=True)
            candidates.sort(key=self.priority)
            victims = self._fewest_victims(need, base, candidates, self.cap[name])
            for victim in victims:
                self.evicting.add(victim.key)
                _plus(self.releasing[name], self.vector(victim.holding))
                decisions[victim.key] = _held(
                    victim, f"preempted by {job.key} (higher priority): checkpointing, then evicted", eviction=True
                )
            _plus(self.reserved[name], need)
            _plus(self.committed[name], need)
            self._freeable.clear()
            return victims
        return None

    def _evictable(self, holder: JobView, priority: int) -> bool:
        """Training of lower priority, not already leaving: a checkpoint lets it resume. Evaluation and
        serving have no checkpoint to resume from, and a serving endpoint is not a batch job to evict."""
        return holder.workload == "Training" and holder.key not in self.evicting and self.priority(holder) < priority

    def after_release(self, flavor: str) -> Vector:
        """Usage in a flavor once what is being released is gone, plus what is reserved for preemptors."""
        return [u - r + s for u, r, s in zip(self.used[flavor], self.releasing[flavor], self.reserved[flavor])]

    def freeable(self, flavor: str, priority: int) -> Vector:
        """Usage in a flavor if every job of lower priority left (and what is being released did)."""
        key = (flavor, priority)
        if key not in self._freeable:
            used = self.after_release(flavor)
            for holder in self.holders[flavor]:
                if self._evictable(holder, priority):
                    _plus(used, self.vector(holder.holding), -1)
            self._freeable[key] = used
        return self._freeable[key]

    def _fewest_victims(self, need: Vector, base: Vector, candidates: list[JobView], cap: Vector) -> list[JobView]:
        used = list(base)
        victims: list[JobView] = []
        for victim in candidates:
            if _fits(need, used, cap):
                break
            victims.append(victim)
            _plus(used, self.vector(victim.holding), -1)
        for victim in reversed(list(victims)):
            trial = list(used)
            _plus(trial, self.vector(victim.holding))
            if _fits(need, trial, cap):
                victims.remove(victim)
                used = trial
        return victims

    def wait_estimates(self, waiting: list[JobView]) -> list[int | None]:
        """Seconds until each waiting job could start, from the running jobs' own ETAs; None if unknown.

        Jobs ahead are assumed to hold what they take for longer than the horizon (their durations are
        unknown), so estimates are lower bounds that grow as the queue fills.
        """
        times: dict[str, list[int]] = {}
        freed: dict[str, list[Vector]] = {}
        for name in self.names:
            events = sorted(
                ((at, self.vector(h.holding)) for h in self.holders[name] if (at := self._frees_in(h)) is not None),
                key=lambda event: event[0],
            )
            running = [0] * len(self.resources)
            times[name], freed[name] = [], []
            for at, amounts in events:
                _plus(running, amounts)
                times[name].append(at)
                freed[name].append(list(running))
        free = {name: [c - u for c, u in zip(self.cap[name], self.used[name])] for name in self.names}
        strict = self.queue.strategy == "StrictFIFO"
        estimates: list[int | None] = []
        earliest_allowed: int | None = 0
        for job in waiting:
            if strict and earliest_allowed is None:
                estimates.append(None)
                continue
            need = self.request(job)
            best: tuple[int, str] | None = None
            for name in self.names:
                at = _earliest(need, free[name], times[name], freed[name])
                if at is not None and (best is None or at < best[0]):
                    best = (at, name)
            if best is None:
                estimates.append(None)
                earliest_allowed = None
                continue
            at = max(best[0], earliest_allowed or 0) if strict else best[0]
            earliest_allowed = at
            _plus(free[best[1]], need, -1)
            estimates.append(at)
        return estimates


def _earliest(need: Vector, free: Vector, times: list[int], freed: list[Vector]) -> int | None:
    """First release time after which `need` fits in `free` plus what has been released by then."""
    short = [n - f if n > 0 else 0 for n, f in zip(need, free)]
    if all(s <= 0 for s in short):
        return 0
    if not freed or any(s > r for s, r in zip(short, freed[-1])):
        return None
    index = bisect.bisect_left(freed, True, key=lambda released: all(s <= r for s, r in zip(short, released)))
    return times[index]


def apply_decisions(jobs: Iterable[JobView], result: CycleResult) -> list[JobView]:
    """The jobs as their status reads once a cycle's decisions are written: what a restarted operator sees."""
    out = []
    for job in jobs:
        decision = result.jobs.get(job.key)
        if decision is None:
            out.append(job)
            continue
        out.append(
            replace(
                job,
                admitted=decision.admitted,
                flavor=decision.flavor,
                held=dict(decision.resources),
                eviction_requested=decision.eviction_requested,
            )
        )
    return out

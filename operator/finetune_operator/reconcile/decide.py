"""The FineTuneJob state machine (DESIGN.md §3): spec, status and observed children in, actions out.

Pure and level-triggered: the same inputs give the same actions, and a job whose status already says
what the children show gets no writes. Creations come before the status patch that records them, so a
crash between the two only repeats a create (409, success) on the next reconcile.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from finetune_api import FineTuneJob, TERMINAL_PHASES
from finetune_api.contract.vllm import pooled_base_name
from finetune_api.contract.summaries import EvaluateSummary, MergeSummary, PrepareSummary, ShadowSummary, TrainSummary
from finetune_api.contract.upload import UPLOAD_RECORD, UploadSummary
from finetune_api.common import Condition
from finetune_api.queue import PoolAdmission
from finetune_api.job import (Artifacts, CanaryStatus, DataReport, EvaluationStatus, FineTuneJobStatus, Progress, ServingStatus,
                              UploadedArtifacts)
from ..builders import names
from ..builders.canary import canary_route
from ..builders.eval_job import pool_judged_graders
from ..builders.resolve import output_uri, uploads_output
from ..builders.common import format_quantity
from ..builders.workloads import Workload, grows, queued_workload
from ..deadlines import deadline_remaining_seconds, phase_deadline_seconds, training_deadline_seconds
from ..progress import progress_status, progress_summary
from ..settings import OperatorSettings
from .actions import Action, Apply, Child, Create, Delete, DeleteServing, Emit, Observe, PatchStatus, Requeue
from .canary import NOT_GRADED, Arms, Keep, Promote, Shadow, judge
from .failures import ReconcileFailure
from .observed import JobState, JudgePool, ObservedChildren, format_time, parse_time
from .status import changes, find_condition, model_patch, nested_model, revised, set_condition

DEPLOY_POLL_SECONDS = 5.0
CANARY_POLL_SECONDS = 15.0
"""How often a canary's analysis reads both arms' `/metrics`."""
AFTER_TRAINING = ("Evaluating", "Uploading", "Deploying", "Serving", "Succeeded", "Rejected")


class Plan:
    """Accumulates one reconcile's actions and its single status patch, planned through the status models
    (`set`, `update`, `condition`) so that a misspelt field fails here instead of vanishing at the write."""

    def __init__(self, job: FineTuneJob, now: dt.datetime) -> None:
        self.job = job
        self.name = job.metadata.name
        self.generation = job.metadata.generation or 1
        self.status = job.status or FineTuneJobStatus()
        self.current: dict[str, Any] = self.status.to_api() if job.status else {}
        self.now = now
        self.now_text = format_time(now)
        self.conditions: list[Condition] = list(self.status.conditions)
        self.patch: dict[str, Any] = {}
        self.actions: list[Action] = []
        self.events: list[Action] = []

    # -- building blocks ------------------------------------------------------------------------
    def do(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def set(self, **fields: Any) -> None:
        """Set `FineTuneJobStatus` fields by their snake_case names: values the model holds (a nested object
        as its status model, written whole; `None` removes it), checked now. Partial nested changes go
        through `update`."""
        partial = sorted(name for name, value in fields.items() if isinstance(value, dict))
        if partial:
            raise TypeError(f"status {', '.join(partial)}: pass the status model, or plan.update() for some fields")
        self._merge(model_patch(FineTuneJobStatus, fields))

    def update(self, section: str, **fields: Any) -> None:
        """Change some fields of the nested status object `section` (`queue`, `attempts`, ...) by their
        snake_case names, checked against its model now; the rest stay as stored (merge patch)."""
        changed = model_patch(nested_model(section), fields)
        self._merge({FineTuneJobStatus.model_fields[section].alias or section: changed})

    def _merge(self, patch: dict[str, Any]) -> None:
        """Add to the planned patch; a nested object merges with what is already planned for it."""
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(self.patch.get(key), dict):
                self.patch[key] = {**self.patch[key], **value}
            else:
                self.patch[key] = value

    def condition(self, type_: str, status: bool | None, reason: str, message: str, generation: int | None = None) -> None:
        self.conditions = set_condition(
            self.conditions, type_, status, reason, message, self.now_text, generation or self.generation
        )
        self.set(conditions=self.conditions)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Emit("Warning" if warning else "Normal", reason, message))

    def transition(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        """Move to `phase`: one patch (phase, reason, message, times, generation) and one Event."""
        old = self.status.phase
        started = parse_time(self.status.phase_started_at)
        if started is not None and old != phase:
            self.do(Observe("phase_seconds", (self.now - started).total_seconds(), {"phase": old}))
        self.set(phase=phase, reason=reason, message=message, phase_started_at=self.now_text,
                 observed_generation=self.generation)
        if phase in TERMINAL_PHASES:
            self.set(completion_time=self.now_text)
        self.event(reason, message, warning)

    def note(self, message: str, reason: str | None = None) -> None:
        """An in-phase message (written only when it differs)."""
        self.set(message=message, **({"reason": reason} if reason else {}))

    def result(self) -> list[Action]:
        out = list(self.actions)
        if self.patch and changes(self.patch, self.current):
            out.append(PatchStatus(self.patch))
            out.extend(self.events)
        return out

    # -- facts ------------------------------------------------------------------------------------
    @property
    def attempt(self) -> int:
        """The current training attempt (0-based); -1 before the first one starts."""
        return self.status.attempts.count - 1


def decide(job: FineTuneJob, children: ObservedChildren, now: dt.datetime, settings: OperatorSettings) -> list[Action]:
    """Everything the operator should do now for `job`, given what it observed of its children."""
    plan = Plan(job, now)
    phase = plan.status.phase
    if phase == "Failed":
        if (plan.status.observed_generation or 0) < plan.generation:
            plan.set(observed_generation=plan.generation)
        return plan.result()
    new_generation = job.status is not None and (plan.status.observed_generation or 0) < plan.generation and phase != "Pending"
    if new_generation and _spec_changed(plan, children, settings):
        return plan.result()
    deadline = phase_deadline_seconds(job, phase, settings)
    remaining = deadline_remaining_seconds(job, now, settings)
    if deadline is not None and remaining is not None and remaining < 0:
        _deadline_exceeded(plan, children, deadline, settings)
        return plan.result()
    step = _PHASES.get(phase, _pending)
    step(plan, children, settings)
    return plan.result()


# -- reconcile errors and deadlines ------------------------------------------------------------------

def reconcile_failed(job: FineTuneJob, failure: ReconcileFailure, failures: int, now: dt.datetime,
                     settings: OperatorSettings) -> list[Action]:
    """A reconcile raised (`failures` times in a row). Transient: a `Reconciled=False` condition, the
    handler retries with backoff. Permanent: the condition and a Warning Event at once, and after
    `settings.reconcile_error_attempts` the job is `Failed` with the error as its message."""
    plan = Plan(job, now)
    if plan.status.phase in TERMINAL_PHASES:
        return []
    plan.do(Observe("reconcile_error", 1, {"class": failure.error_class, "reason": failure.reason}))
    if failure.error_class == "transient":
        plan.condition("Reconciled", False, failure.reason, f"{failure.message}; retrying with backoff"[:1024])
        return plan.result()
    attempts = settings.reconcile_error_attempts
    if failures < attempts:
        # The same text on every attempt: one write and one Event, and no status event that would
        # reconcile again at once and spend the budget without the backoff.
        text = f"{failure.message} (the job fails if this persists for {attempts} attempts)"
        plan.condition("Reconciled", False, failure.reason, text[:1024])
        plan.event(failure.reason, failure.message, warning=True)
        return plan.result()
    plan.condition("Reconciled", False, failure.reason, failure.message[:1024])
    if plan.status.queue is not None:
        plan.update("queue", admitted=False, eviction_requested=False)
    plan.transition("Failed", failure.reason, failure.message[:1024], warning=True)
    return plan.result()


def reconcile_recovered(job: FineTuneJob, now: dt.datetime) -> list[Action]:
    """A reconcile went through after errors: the `Reconciled` condition says so (written only once)."""
    plan = Plan(job, now)
    reconciled = find_condition(plan.conditions, "Reconciled")
    if reconciled is not None and reconciled.status == "False":
        plan.condition("Reconciled", True, "Reconciled", "the last reconcile went through")
    return plan.result()


_WAITED_FOR = {"Validating": "the prepare Job (data checks)", "Evaluating": "the evaluation Job",
               "Uploading": "the upload Job"}
_PHASE_JOB = {"Validating": names.prepare_job_name, "Evaluating": names.eval_job_name, "Uploading": names.upload_job_name}
_PHASE_CONDITION = {"Validating": "Validated", "Evaluating": "Evaluated", "Uploading": "Uploaded", "Deploying": "Ready"}


def _deadline_exceeded(plan: Plan, children: ObservedChildren, deadline: int, settings: OperatorSettings) -> None:
    """The phase ran out of time: `Failed`, naming the phase and what it waited for; the phase's Job
    (if any) is deleted so its pods stop holding the cluster."""
    phase = plan.status.phase
    waiting = _PHASE_WORKLOAD.get(phase)
    queue = plan.status.queue
    pool = _pool_waiting(children)
    if waiting is not None and queue is not None and queue.workload == waiting and not queue.admitted:
        waited = f"never admitted: {queue.message or f'waiting in FineTuneQueue {queue.name}'}"
    elif phase == "Deploying" and pool is not None:
        waited = f"adapter pool {pool.name} never admitted: {pool.message}"
    elif phase == "Deploying" and (more := _serving_growth(plan, settings)):
        waited = f"the serving's {more} more never admitted: {queue.message if queue else ''}"
    elif phase == "Deploying":
        waited = _serving_waited_for(children)
    else:
        child = children.jobs.get(_PHASE_JOB[phase](plan.name))
        if child is not None and not child.deleting:
            plan.do(Delete("Job", child.name))
        waited = f"{_WAITED_FOR[phase]} did not finish: " + (child.waiting_text() if child else "it was never created")
    reason = f"{phase}DeadlineExceeded"
    message = f"{phase} exceeded its deadline of {deadline}s: {waited}"[:1024]
    plan.condition(_PHASE_CONDITION[phase], False, reason, message)
    plan.transition("Failed", reason, message, warning=True)


def _serving_waited_for(children: ObservedChildren) -> str:
    serving = children.serving
    if serving is None or serving.message == "missing":
        return "the serving Deployment was never created"
    if not serving.ready:
        detail = serving.pods_waiting or serving.message or "no replica became ready"
        return f"vLLM pod never became ready: {detail}"
    return f"vLLM is ready but the smoke request never succeeded: {serving.smoke_message or 'no answer'}"


# -- spec changes ---------------------------------------------------------------------------------

def _spec_changed(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> bool:
    """A new generation. Training fields are immutable (CEL); `evaluation` re-runs the evaluation,
    `serving` re-deploys, anything else (queue, retry) applies from the next decision on.

    Returns True when this reconcile is complete (the phase handlers must not run on top of it).
    """
    phase = plan.status.phase
    if children.config_spec is None and phase in AFTER_TRAINING:
        return True  # the handler reads the ConfigMap's spec on the next pass
    spec = plan.job.spec
    old = children.config_spec or {}
    plan.do(Apply("config"))
    eval_changed = old.get("evaluation") != spec.evaluation.to_api()
    serving_changed = old.get("serving") != spec.serving.to_api()
    gen = plan.generation
    if phase in AFTER_TRAINING and eval_changed and spec.evaluation.enabled:
        for stale in (names.eval_job_name(plan.name), names.upload_job_name(plan.name)):
            child = children.jobs.get(stale)
            if child is not None and not child.deleting:
                plan.do(Delete("Job", child.name))
        message = f"spec.evaluation changed in generation {gen}: evaluating again"
        if _holds_serving(plan):
            message += "; the endpoint stops until the new evaluation passes (its replicas held quota)"
            _stop_serving(plan, "Evaluating", "stopped while the model is evaluated again")
        _ask_admission(plan, settings, "Evaluation")
        plan.condition("Evaluated", False, "SpecChanged", message)
        plan.condition("Deployed", False, "SpecChanged", "waiting for the new evaluation")
        plan.transition("Evaluating", "SpecChanged", message)
        return True
    if phase in ("Deploying", "Serving", "Succeeded") and serving_changed:
        if spec.serving.enabled:
            _start_deploying(plan, children, settings, f"spec.serving changed in generation {gen}: deploying again",
                             "SpecChanged")
        else:
            _stop_serving(plan, "ServingDisabled", "spec.serving.enabled is false")
            plan.transition("Succeeded", "ServingDisabled", f"serving disabled in generation {gen}; endpoint removed")
        return True
    plan.set(observed_generation=gen)
    return False


def _holds_serving(plan: Plan) -> bool:
    """The job's serving replicas hold an admission of the embedded queue (they request accelerators)."""
    queue = plan.status.queue
    return queue is not None and queue.workload == "Serving" and queue.admitted


def _stop_serving(plan: Plan, reason: str, message: str) -> None:
    """Remove the job's serving objects (an adapter in a shared pool is unloaded once the job leaves
    Deploying/Serving; the pool stays) and the quota its replicas held."""
    plan.do(DeleteServing())
    _release(plan, "Serving")
    plan.condition("Deployed", False, reason, message)
    plan.condition("Ready", False, reason, message)
    plan.set(serving=None)


# -- phases -----------------------------------------------------------------------------------------

def serving_refusal(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """Why the operator's own configuration could never serve `job` as it asks, known before any GPU is
    spent: an adapter above the pools' `maxLoraRank` (the admin's) would train, pass and never load, and
    one named like the pool's base model would be refused by vLLM (one model per name)."""
    serving, rank = job.spec.serving, job.spec.adapter.r
    limit = settings.adapter_pool.max_lora_rank
    if not (serving.enabled and serving.mode == "adapter" and serving.canary is None):
        return None
    if rank > limit:
        return (f"spec.adapter.r={rank} is above the adapter pools' maxLoraRank {limit} (the operator's "
                "jobs.adapterPool): set spec.serving.mode: merged, or a lower rank")
    base = pooled_base_name(job.spec)
    if job.metadata.name == base:
        return (f"metadata.name {base!r} is the name its base model is served under in the shared adapter pool, "
                "and vLLM serves one model per name: rename the job, set spec.model.name, or set spec.serving.mode: merged")
    return None


def judge_refusal(job: FineTuneJob, pool: JudgePool | None) -> str | None:
    """Why the job's `score_model` graders without `endpoint` have no judge: on a cluster they ask the
    base model served by the namespace's adapter pool for this base, and the operator does not start a
    pool for a judge (a pool exists while an adapter of this base is served here). Checked when the data
    are valid (before training) and again when evaluation starts; never waited for."""
    graders = pool_judged_graders(job)
    if not graders or (pool is not None and pool.url is not None):
        return None
    where = f"adapter pool {pool.name}" if pool is not None else "adapter pool"
    return (f"spec.evaluation.graders {', '.join(graders)}: a score_model grader without `endpoint` asks the base model "
            f"{pooled_base_name(job.spec)!r} served by this namespace's {where}, which has no ready replica (no adapter "
            "of this base is served here): set the grader's `endpoint` (and `apiKeySecret`)")


def _pending(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    refusal = serving_refusal(plan.job, settings)
    if refusal:
        plan.condition("Validated", False, "ServingNotPossible", refusal)
        plan.transition("Failed", "ServingNotPossible", refusal, warning=True)
        return
    refused = _namespace_cap_refusal(plan.job, children, settings)
    if refused is not None:
        rule, message = refused
        plan.transition("Rejected", rule, message, warning=True)
        return
    plan.do(Create("config"), Create("prepare"))
    plan.condition("Validated", False, "Validating", "checking the datasets")
    plan.set(start_time=plan.status.start_time or plan.now_text)
    plan.transition("Validating", "Validating", "checking the datasets (prepare Job started)")


def _namespace_cap_refusal(job: FineTuneJob, children: ObservedChildren,
                           settings: OperatorSettings) -> tuple[str, str] | None:
    """(reason, message) when starting this job would take its namespace past a cap; None otherwise.
    The reason is the rule's name as an admin wrote it in the Helm values."""
    ns = job.metadata.namespace or ""
    caps, usage = settings.namespace_caps.get(ns), children.namespace_usage
    if caps is None or usage is None:
        return None
    if caps.max_concurrent_jobs is not None and usage.jobs + 1 > caps.max_concurrent_jobs:
        return "MaxConcurrentJobs", (f"namespaces.{ns}.maxConcurrentJobs: {ns} already runs {usage.jobs} jobs, its cap is "
                                     f"{caps.max_concurrent_jobs}; submit it again when one has ended")
    gpus = job.spec.resources.nodes * job.spec.resources.gpus_per_node
    if caps.max_gpus is not None and usage.gpus + gpus > caps.max_gpus:
        return "MaxGpus", (f"namespaces.{ns}.maxGpus: {ns}'s started jobs hold {usage.gpus} GPUs; {gpus} more exceed its cap of "
                           f"{caps.max_gpus}")
    return None


def _validating(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    prep = children.jobs.get(names.prepare_job_name(plan.name))
    if prep is None:
        plan.do(Create("config"), Create("prepare"))
        return
    if prep.outcome == "running":
        return
    found = prep.summary(PrepareSummary)
    summary = found or PrepareSummary(ok=False, message="the prepare Job succeeded but its pod left no data report "
                                      "(termination message); the data were not checked")
    if prep.outcome == "failed" or not summary.ok:
        message = prep.failure_text() if prep.outcome == "failed" else (summary.message or "data checks failed")
        kind = prep.failure_class() if prep.outcome == "failed" else ("user" if found else "infrastructure")
        reason = "ValidationFailed" if kind == "user" else "PrepareFailed"
        if summary.data is not None:
            plan.set(data=_data_report(summary.data, message))
        plan.condition("Validated", False, reason, message)
        plan.transition("Failed", reason, message, warning=True)
        return
    report = _data_report(summary.data or DataReport(), "")
    plan.set(data=report)
    counted = f"{report.train_examples} training examples"
    no_judge = judge_refusal(plan.job, children.judge_pool) if plan.job.spec.evaluation.enabled else None
    if no_judge:
        plan.condition("Validated", False, "JudgeEndpointMissing", no_judge)
        plan.transition("Failed", "JudgeEndpointMissing", no_judge, warning=True)
        return
    plan.condition("Validated", True, "DataValid", counted)
    if settings.queue_mode == "none":
        _start_training(plan, children, f"data valid ({counted}); no queue: training")
    elif settings.queue_mode == "kueue":
        plan.do(Create("train-service"), Create("train", attempt=plan.attempt + 1))
        plan.update("attempts", count=plan.status.attempts.count + 1)
        plan.update("queue", name=plan.job.spec.queue.name, admitted=False)
        plan.condition("Admitted", False, "Queued", f"waiting for Kueue LocalQueue {plan.job.spec.queue.name}")
        plan.transition("Queued", "Queued", f"data valid ({counted}); waiting for Kueue admission")
    else:
        plan.update("queue", name=plan.job.spec.queue.name, admitted=False, eviction_requested=False)
        plan.condition("Admitted", False, "Queued", f"waiting in FineTuneQueue {plan.job.spec.queue.name}")
        plan.transition("Queued", "Queued", f"data valid ({counted}); waiting in queue {plan.job.spec.queue.name}")


def _data_report(data: DataReport, message: str) -> DataReport:
    return revised(data, message=message[:1024]) if message else data


def _start_training(plan: Plan, children: ObservedChildren, message: str) -> None:
    """Start the next attempt: Service and Job first, then one status patch."""
    attempt = plan.attempt + 1
    plan.do(Create("train-service"), Create("train", attempt=attempt))
    plan.update("attempts", count=attempt + 1)
    plan.set(progress=Progress(summary="starting"))
    flavor = children.flavor.name if children.flavor else None
    plan.condition("Admitted", True, "Admitted", f"admitted{f' to flavor {flavor}' if flavor else ''}")
    plan.condition("Trained", False, "Training", f"attempt {attempt} started")
    plan.transition("Training", "Training", f"{message} (attempt {attempt})")


def _queued(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    if settings.queue_mode == "kueue":
        _queued_kueue(plan, children)
        return
    if settings.queue_mode == "none":
        _start_training(plan, children, "no queue: training")
        return
    queue = plan.status.queue
    if queue is None or not queue.admitted:
        return
    previous = children.jobs.get(names.train_job_name(plan.name, plan.attempt)) if plan.attempt >= 0 else None
    if previous is not None and previous.outcome == "running":
        plan.note(f"admitted; waiting for attempt {plan.attempt} to stop after its eviction")
        return
    started = parse_time(plan.status.phase_started_at)
    if started is not None:
        plan.do(Observe("queue_wait_seconds", (plan.now - started).total_seconds(), {"queue": queue.name}))
    flavor = queue.flavor or (children.flavor.name if children.flavor else None)
    plan.update("queue", admitted_at=queue.admitted_at or plan.now_text)
    _start_training(plan, children, f"admitted by queue {queue.name}{f' (flavor {flavor})' if flavor else ''}")


def _queued_kueue(plan: Plan, children: ObservedChildren) -> None:
    train = children.jobs.get(names.train_job_name(plan.name, plan.attempt)) if plan.attempt >= 0 else None
    if train is None:
        plan.do(Create("train-service"), Create("train", attempt=max(plan.attempt, 0)))
        if plan.attempt < 0:
            plan.update("attempts", count=1)
        return
    workload = children.workload
    if workload is not None:
        plan.update("queue", name=plan.job.spec.queue.name, admitted=workload.admitted, flavor=workload.flavor,
                    message=workload.message[:512])
    if not train.suspended:
        plan.update("queue", admitted=True, admitted_at=plan.now_text)
        plan.condition("Admitted", True, "Admitted", "admitted by Kueue")
        plan.condition("Trained", False, "Training", f"attempt {plan.attempt} started")
        plan.transition("Training", "Training", f"admitted by Kueue (attempt {plan.attempt})")


def _training(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    attempt = plan.attempt
    train = children.jobs.get(names.train_job_name(plan.name, attempt)) if attempt >= 0 else None
    queue = plan.status.queue
    if settings.queue_mode == "embedded" and queue is not None and queue.eviction_requested:
        _evict(plan, train, children, settings)
        return
    if train is None:
        if attempt < 0:
            _start_training(plan, children, "training")
        else:
            plan.do(Create("train-service"), Create("train", attempt=attempt))
        return
    if train.outcome == "running":
        if settings.queue_mode == "kueue" and train.suspended:
            _preempted_by_kueue(plan, settings)
            return
        if children.progress is not None:
            plan.set(progress=progress_status(children.progress, plan.now_text))
        plan.do(Requeue(settings.progress_interval_seconds))
        return
    gpu_seconds = _gpu_seconds(plan, train)
    if train.outcome == "succeeded":
        _trained(plan, children, train, gpu_seconds, settings)
        return
    _training_failed(plan, train, gpu_seconds, settings)


def _gpu_seconds(plan: Plan, train: JobState) -> float:
    """Accelerator-seconds the attempt held (nodes × GPUs per node × wall time)."""
    res = plan.job.spec.resources
    start, end = parse_time(train.started_at), parse_time(train.finished_at) or plan.now
    if start is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0) * res.nodes * res.gpus_per_node


def _spend_gpu(plan: Plan, seconds: float) -> None:
    plan.set(gpu_seconds=round(plan.status.gpu_seconds + seconds, 3))
    if seconds:
        plan.do(Observe("gpu_hours", seconds / 3600.0, {"namespace": plan.job.metadata.namespace or ""}))


def _trained(plan: Plan, children: ObservedChildren, train: JobState, gpu_seconds: float, settings: OperatorSettings) -> None:
    summary = train.summary(TrainSummary) or TrainSummary()
    if not summary.ok:
        message = summary.message or "the trainer reported a failure"
        plan.condition("Trained", False, "TrainingFailed", message)
        plan.transition("Failed", "TrainingFailed", message, warning=True)
        return
    _spend_gpu(plan, gpu_seconds)
    plan.set(progress=_final_progress(plan, summary), artifacts=_trained_artifacts(plan, summary, settings))
    plan.update("queue", admitted=False, eviction_requested=False)
    plan.condition("Trained", True, "Trained", f"attempt {plan.attempt} finished")
    spec = plan.job.spec
    if spec.evaluation.enabled:
        _start_evaluating(plan, children, settings,
                          "trained; evaluating against the base" if spec.evaluation.compare_to_base else "trained; evaluating")
    elif uploads_output(plan.job):
        _start_uploading(plan, "trained; evaluation disabled: uploading")
    elif spec.serving.enabled:
        _start_deploying(plan, children, settings, "trained; evaluation disabled: deploying", "Deploying")
    else:
        plan.transition("Succeeded", "Trained", "trained (no evaluation, serving disabled)")


def _final_progress(plan: Plan, summary: TrainSummary) -> Progress:
    """The progress as the trainer's summary leaves it: its last step, final training and validation loss."""
    last = plan.status.progress or Progress()
    loss = summary.train_loss if summary.train_loss is not None else last.loss
    eval_loss = summary.eval_loss if summary.eval_loss is not None else last.eval_loss
    return revised(last, step=summary.step or last.step, total_steps=summary.total_steps or last.total_steps,
                   loss=loss, eval_loss=eval_loss, percent=100, summary=progress_summary("done", loss, eval_loss),
                   updated_at=plan.now_text)


def _trained_artifacts(plan: Plan, summary: TrainSummary, settings: OperatorSettings) -> Artifacts:
    """Where the weights and the latest checkpoint are (under the output URI), with the weights' digest."""
    root = output_uri(plan.job, settings)
    artifacts = Artifacts(root=root)
    if summary.weights is not None:
        where = summary.weights.under(root)
        if plan.job.spec.adapter.type == "full":
            artifacts = revised(artifacts, model=where, model_digest=summary.weights.digest)
        else:
            artifacts = revised(artifacts, adapter=where, adapter_digest=summary.weights.digest)
    if summary.checkpoint is not None:
        artifacts = revised(artifacts, checkpoint=summary.checkpoint.under(root))
    return artifacts


def _training_failed(plan: Plan, train: JobState, gpu_seconds: float, settings: OperatorSettings) -> None:
    kind = train.failure_class()
    text = train.failure_text()
    attempt = plan.attempt
    attempts = plan.status.attempts
    if kind in ("user", "disk-full"):
        reason, what = ("TrainingFailed", "a user error") if kind == "user" else ("DiskFull", "a full volume")
        _spend_gpu(plan, gpu_seconds)
        plan.update("attempts", last_failure=f"attempt {attempt}: {text}"[:1024])
        plan.update("queue", admitted=False)
        plan.condition("Trained", False, reason, text)
        plan.do(Observe("retry", 1, {"class": kind}))
        plan.transition("Failed", reason, f"attempt {attempt} failed with {what}: {text}", warning=True)
        return
    if kind == "deadline":
        _spend_gpu(plan, gpu_seconds)
        limit = training_deadline_seconds(plan.job, settings)
        progress = plan.status.progress.summary if plan.status.progress else ""
        waited = train.waiting_text() if any(p.waiting for p in train.pods) else (
            "the run did not finish" + (f" (progress: {progress})" if progress else ""))
        message = f"Training attempt {attempt} exceeded its deadline of {limit}s (activeDeadlineSeconds): {waited}"
        plan.update("attempts", last_failure=message[:1024])
        plan.update("queue", admitted=False)
        plan.condition("Trained", False, "TrainingDeadlineExceeded", message[:1024])
        plan.transition("Failed", "TrainingDeadlineExceeded", message[:1024], warning=True)
        return
    if kind == "preempted":
        if _preemptions_exhausted(plan, settings, gpu_seconds, text):
            return
        _next_attempt(plan, gpu_seconds, "preempted", "Preempted", f"attempt {attempt} preempted: {text}",
                      f"attempt {attempt} was preempted ({text}); attempt {attempt + 1} resumes from the latest "
                      "checkpoint (retry budget not spent)", preemptions=attempts.preemptions + 1)
        return
    failures = attempts.infrastructure_failures + 1
    budget = plan.job.spec.retry.max_attempts
    if failures >= budget:
        _spend_gpu(plan, gpu_seconds)
        plan.update("attempts", infrastructure_failures=failures, last_failure=f"attempt {attempt}: {text}"[:1024])
        plan.update("queue", admitted=False)
        plan.condition("Trained", False, "RetriesExhausted", text)
        plan.do(Observe("retry", 1, {"class": "exhausted"}))
        plan.transition("Failed", "RetriesExhausted",
                        f"attempt {attempt} failed ({text}); {failures} of {budget} attempts used", warning=True)
        return
    failed_at = parse_time(train.finished_at) or plan.now
    retry_at = failed_at + dt.timedelta(seconds=plan.job.spec.retry.backoff_seconds)
    if plan.now < retry_at:
        plan.note(f"attempt {attempt} failed ({text}); retrying from the latest checkpoint at {format_time(retry_at)}",
                  "BackoffRetry")
        plan.do(Requeue((retry_at - plan.now).total_seconds()))
        return
    _next_attempt(plan, gpu_seconds, "infrastructure", "Retrying", f"attempt {attempt}: {text}",
                  f"attempt {attempt} failed ({text}); attempt {attempt + 1} of {budget} resumes from the latest "
                  "checkpoint", infrastructure_failures=failures)


def _next_attempt(plan: Plan, gpu_seconds: float, retry_class: str, reason: str, last_failure: str, message: str,
                  **counters: int) -> None:
    """End the current attempt and start the next one (a new Job that resumes from the checkpoint)."""
    attempt = plan.attempt
    _spend_gpu(plan, gpu_seconds)
    plan.update("attempts", count=attempt + 2, last_failure=last_failure[:1024], **counters)
    plan.do(Create("train", attempt=attempt + 1), Observe("retry", 1, {"class": retry_class}))
    plan.condition("Trained", False, reason, message)
    plan.event(reason, message, warning=True)
    plan.note(message[:1024], reason)


def _preemptions_exhausted(plan: Plan, settings: OperatorSettings, gpu_seconds: float, text: str) -> bool:
    """Fail the job when this preemption is one more than the operator allows (`maxPreemptions`):
    preemptions are free for the retry budget, so without a cap a job on flaky or contended nodes
    would hold its place in the queue forever."""
    count = plan.status.attempts.preemptions + 1
    limit = settings.max_preemptions
    if count <= limit:
        return False
    _spend_gpu(plan, gpu_seconds)
    message = (f"attempt {plan.attempt} preempted ({text}); {count} preemptions exceed the operator's limit of "
               f"{limit} (Helm jobs.maxPreemptions)")[:1024]
    plan.update("attempts", preemptions=count, last_failure=message)
    plan.update("queue", admitted=False)
    plan.condition("Trained", False, "PreemptionsExhausted", message)
    plan.do(Observe("retry", 1, {"class": "exhausted"}))
    plan.transition("Failed", "PreemptionsExhausted", message, warning=True)
    return True


def _evict(plan: Plan, train: JobState | None, children: ObservedChildren, settings: OperatorSettings) -> None:
    """The queue preempted this job: stop the gang (SIGTERM → checkpoint), wait again, budget untouched."""
    if train is not None and not train.deleting:
        plan.do(Delete("Job", train.name, "Foreground", children.eviction_grace_seconds))
    gpu = _gpu_seconds(plan, train) if train is not None else 0.0
    if _preemptions_exhausted(plan, settings, gpu, "evicted by the queue"):
        plan.update("queue", eviction_requested=False, flavor=None, admitted_at=None)
        return
    _spend_gpu(plan, gpu)
    plan.update("queue", admitted=False, eviction_requested=False, flavor=None, admitted_at=None)
    plan.update("attempts", preemptions=plan.status.attempts.preemptions + 1,
                last_failure=f"attempt {plan.attempt} evicted by the queue")
    plan.do(Observe("retry", 1, {"class": "preempted"}))
    plan.condition("Admitted", False, "Preempted", "evicted by a higher-priority job; waiting again")
    plan.condition("Trained", False, "Preempted", f"attempt {plan.attempt} checkpoints and stops")
    plan.transition("Queued", "Preempted",
                    f"attempt {plan.attempt} evicted by the queue; it resumes from its checkpoint when admitted again",
                    warning=True)


def _preempted_by_kueue(plan: Plan, settings: OperatorSettings) -> None:
    if _preemptions_exhausted(plan, settings, 0.0, "Kueue suspended the training Job"):
        return
    plan.update("queue", admitted=False)
    plan.update("attempts", preemptions=plan.status.attempts.preemptions + 1)
    plan.do(Observe("retry", 1, {"class": "preempted"}))
    plan.condition("Admitted", False, "Preempted", "Kueue suspended the training Job")
    plan.transition("Queued", "Preempted", "Kueue evicted the training; waiting for admission again", warning=True)


def _start_evaluating(plan: Plan, children: ObservedChildren, settings: OperatorSettings, message: str,
                      reason: str = "Evaluating") -> None:
    if _ask_admission(plan, settings, "Evaluation"):
        plan.condition("Evaluated", False, reason, "waiting for quota")
        plan.transition("Evaluating", "WaitingForQuota", f"{message}: waiting in FineTuneQueue {plan.job.spec.queue.name} "
                                                          "for the evaluation's accelerators")
        return
    if _create_eval(plan, children):
        plan.condition("Evaluated", False, reason, "evaluation started")
        plan.transition("Evaluating", reason, message)


def _create_eval(plan: Plan, children: ObservedChildren) -> bool:
    """Create the evaluation Job with its pool judge; False (the job Failed) when its graders need a
    pool judge and the pool has no ready replica."""
    no_judge = judge_refusal(plan.job, children.judge_pool)
    if no_judge:
        plan.condition("Evaluated", False, "JudgeEndpointMissing", no_judge)
        plan.transition("Failed", "JudgeEndpointMissing", no_judge, warning=True)
        return False
    plan.do(Create("eval", judge_url=children.judge_pool.url if children.judge_pool else None))
    return True


def _evaluation_floor(plan: Plan) -> int:
    """The generation the current evaluation is for: a phase Job made for an older one is stale."""
    evaluated = find_condition(plan.conditions, "Evaluated")
    return (evaluated.observed_generation if evaluated is not None else None) or 0


def _ended_job(plan: Plan, children: ObservedChildren, name: str, child: Child) -> JobState | None:
    """The phase's Job `name` once it has ended; None while it runs, after planning its creation when
    it is missing, or its deletion when it was made before the current evaluation (it is made again)."""
    found = children.jobs.get(name)
    if found is not None and found.generation < _evaluation_floor(plan):
        if not found.deleting:
            plan.do(Delete("Job", found.name))
        return None
    if found is None:
        plan.do(Create(child))
        return None
    return None if found.outcome == "running" else found


def _evaluating(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    floor = _evaluation_floor(plan)
    if names.eval_job_name(plan.name) not in children.jobs:
        if not _waits_for_admission(plan, settings, "Evaluation"):
            _create_eval(plan, children)  # through the judge check, not `_ended_job`'s plain create
        return
    ev = _ended_job(plan, children, names.eval_job_name(plan.name), "eval")
    if ev is None:
        return
    _release(plan, "Evaluation")
    summary = ev.summary(EvaluateSummary)
    if ev.outcome == "failed" or summary is None or not summary.ok:
        text = ev.failure_text() if ev.outcome == "failed" else (
            (summary.message if summary else None) or "the evaluation ended without a summary")
        reason = "DiskFull" if ev.outcome == "failed" and ev.failure_class() == "disk-full" else "EvaluationFailed"
        plan.condition("Evaluated", False, reason, text, floor)
        plan.transition("Failed", reason, text, warning=True)
        return
    root = output_uri(plan.job, settings)
    report = summary.report.under(root) if summary.report is not None else None
    result = EvaluationStatus(passed=summary.passed, score=summary.score, items=summary.items, metrics=summary.metrics,
                              gates=summary.gates, report_path=report, evaluated_generation=floor)
    plan.set(evaluation=result, artifacts=_evaluated_artifacts(root, report, ev.summary(MergeSummary)))
    if not result.passed:
        failed = [g for g in result.gates if not g.passed]
        text = "; ".join(g.message or g.metric for g in failed) or "gates not passed"  # a message names its metric
        plan.condition("Evaluated", True, "GatesNotPassed", text, floor)
        plan.condition("Deployed", False, "GatesNotPassed", "not deployed: the gates did not pass")
        plan.transition("Rejected", "GatesNotPassed", f"the tuned model did not pass its gates: {text}", warning=True)
        return
    plan.condition("Evaluated", True, "GatesPassed", result.score or "all gates passed", floor)
    if uploads_output(plan.job):
        _start_uploading(plan, f"gates passed ({result.score}); uploading" if result.score else "gates passed; uploading")
    elif plan.job.spec.serving.enabled:
        _start_deploying(plan, children, settings,
                         f"gates passed ({result.score}); deploying" if result.score else "gates passed; deploying", "Deploying")
    else:
        plan.transition("Succeeded", "GatesPassed", "gates passed; serving disabled")


def _evaluated_artifacts(root: str, report: str | None, merge: MergeSummary | None) -> Artifacts:
    """The evaluation report and, when the evaluation merged first, the merged model and its digest."""
    artifacts = Artifacts(root=root, eval_report=report)
    if merge is not None and merge.merged is not None:
        artifacts = revised(artifacts, merged=merge.merged.under(root), merged_digest=merge.merged.digest)
    return artifacts


def _start_uploading(plan: Plan, message: str) -> None:
    """The run succeeded (gates passed, or trained with evaluation disabled): the upload Job copies the
    final artifacts from the claim to the `s3://` output before anything is served."""
    plan.do(Create("upload"))
    plan.condition("Uploaded", False, "Uploading", f"uploading to {plan.job.spec.output.uri}")
    plan.transition("Uploading", "Uploading", message)


def _uploading(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    """Wait for `<job>-upload`; its summary's keys and ETags go to `status.artifacts.uploaded`. An upload
    Job older than the last evaluation (a spec change re-evaluated) is replaced: same keys, new bytes."""
    up = _ended_job(plan, children, names.upload_job_name(plan.name), "upload")
    if up is None:
        return
    uri = plan.job.spec.output.uri or ""
    summary = up.summary(UploadSummary)
    if up.outcome == "failed" or summary is None or not summary.ok:
        text = up.failure_text() if up.outcome == "failed" else (
            (summary.message if summary else None) or "the upload Job ended without a summary")
        message = f"upload to {uri} failed: {text}"[:1024]
        plan.condition("Uploaded", False, "UploadFailed", message)
        plan.transition("Failed", "UploadFailed", message, warning=True)
        return
    record = f"{output_uri(plan.job, settings)}/{UPLOAD_RECORD}"
    plan.update("artifacts", uploaded=UploadedArtifacts(uri=uri, count=summary.count, bytes=summary.bytes,
                                                        manifest=summary.manifest, record=record))
    done = f"{summary.count} object(s) uploaded to {uri}"
    plan.condition("Uploaded", True, "Uploaded", done)
    if plan.job.spec.serving.enabled:
        _start_deploying(plan, children, settings, f"{done}; deploying", "Deploying")
    else:
        plan.transition("Succeeded", "Uploaded", f"{done}; serving disabled")


def _start_deploying(plan: Plan, children: ObservedChildren, settings: OperatorSettings, message: str, reason: str) -> None:
    if _ask_admission(plan, settings, "Serving"):
        plan.condition("Deployed", False, reason, "waiting for quota")
        plan.condition("Ready", False, reason, "waiting for quota")
        plan.transition("Deploying", "WaitingForQuota", f"{message}: waiting in FineTuneQueue {plan.job.spec.queue.name} "
                                                         "for the serving replicas' accelerators")
        return
    more = _serving_growth(plan, settings)
    if more:  # the current replicas keep serving on what the job holds until the queue admits the rest
        plan.condition("Deployed", False, reason, "waiting for quota")
        plan.transition("Deploying", "WaitingForQuota", f"{message}: waiting in FineTuneQueue {plan.job.spec.queue.name} "
                                                         f"for {more} more; the current replicas keep serving")
        return
    pool = _pool_waiting(children)
    if pool is not None:  # the job's Deploying phase is what makes its pool ask the queue
        plan.condition("Deployed", False, reason, "waiting for the adapter pool's quota")
        plan.condition("Ready", False, reason, "waiting for the adapter pool's quota")
        plan.transition("Deploying", "WaitingForQuota",
                        f"{message}: adapter pool {pool.name} waiting for quota: {pool.message}"[:1024])
        plan.do(Requeue(DEPLOY_POLL_SECONDS))
        return
    plan.do(Apply("serving"), Requeue(DEPLOY_POLL_SECONDS))
    plan.condition("Deployed", False, reason, "serving objects applied; waiting for a ready replica")
    plan.condition("Ready", False, reason, "waiting for the smoke request")
    plan.transition("Deploying", reason, message)


_PHASE_WORKLOAD: dict[str, Workload] = {"Evaluating": "Evaluation", "Deploying": "Serving"}


def _admits_through_queue(plan: Plan, settings: OperatorSettings, workload: Workload) -> bool:
    """The embedded queue admits this workload: it requests accelerators (CPU-only work starts at once)."""
    return settings.queue_mode == "embedded" and queued_workload(plan.job.spec, workload)


def _ask_admission(plan: Plan, settings: OperatorSettings, workload: Workload) -> bool:
    """Ask the embedded queue to admit `workload` (status.queue names it, not admitted) unless it needs
    no admission (CPU only, another queue mode) or already holds one. Whatever the job held before is
    released in the same write: a job never holds one workload's quota while it waits for the next."""
    if not _admits_through_queue(plan, settings, workload):
        return False
    queue = plan.status.queue
    if queue is not None and queue.admitted and queue.workload == workload:
        return False
    plan.update("queue", name=plan.job.spec.queue.name, workload=workload, admitted=False, admitted_at=None,
                flavor=None, eviction_requested=False, position=None, message="waiting for the queue's next cycle")
    plan.condition("Admitted", False, "Queued", f"{workload.lower()} waiting in FineTuneQueue {plan.job.spec.queue.name}")
    return True


def _waits_for_admission(plan: Plan, settings: OperatorSettings, workload: Workload) -> bool:
    """In the workload's phase: True while the admission it asked for is pending (the queue's position
    and message shown in status)."""
    if not _admits_through_queue(plan, settings, workload):
        return False
    queue = plan.status.queue
    if queue is None or queue.workload != workload:
        return False  # the phase began before evaluation and serving were queued (an operator upgrade)
    if queue.admitted:
        plan.condition("Admitted", True, "Admitted",
                       f"{workload.lower()} admitted{f' to flavor {queue.flavor}' if queue.flavor else ''}")
        return False
    plan.note(f"{workload.lower()} waiting for quota: {queue.message}"[:1024], reason="WaitingForQuota")
    return True


def _serving_growth(plan: Plan, settings: OperatorSettings) -> str:
    """What the job's serving asks beyond the serving admission it holds ("" when nothing, or when it
    holds none): after a `spec.serving` change that asks more replicas."""
    queue = plan.status.queue
    if not _admits_through_queue(plan, settings, "Serving") or queue is None or queue.workload != "Serving" \
            or not queue.admitted or not queue.resources:  # no amounts recorded: it holds what it requests
        return ""
    more = grows(plan.job.spec, queue.resources)
    return ", ".join(f"{name} {format_quantity(value)}" for name, value in sorted(more.items()))


def _pool_waiting(children: ObservedChildren) -> PoolAdmission | None:
    """The job's adapter pool when the embedded queue charges it and has not admitted it (None: admitted,
    not charged, or no pool). Its Deployment is created only once it is admitted."""
    pool = children.pool
    return pool if pool is not None and not pool.admitted else None


def _waits_for_pool(plan: Plan, children: ObservedChildren) -> bool:
    """Deploying: True while the job's adapter pool waits for quota (the pool's position and message shown
    in status; looked at again every poll, since the pool's admission is written to the queue, not the job)."""
    pool = _pool_waiting(children)
    if pool is None:
        return False
    plan.note(f"adapter pool {pool.name} waiting for quota: {pool.message}"[:1024], reason="WaitingForQuota")
    plan.do(Requeue(DEPLOY_POLL_SECONDS))
    return True


def _release(plan: Plan, workload: Workload) -> None:
    """The workload ended: its quota goes back to the queue (the cycle would see it too, one write later)."""
    queue = plan.status.queue
    if queue is not None and queue.workload == workload and queue.admitted:
        plan.update("queue", admitted=False)


def _deploying(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    if _waits_for_admission(plan, settings, "Serving") or _waits_for_pool(plan, children):
        return
    if _serving_growth(plan, settings):
        queue = plan.status.queue
        plan.note(f"serving waiting for quota to grow: {queue.message if queue else ''}"[:1024], reason="WaitingForQuota")
        return
    if plan.status.reason == "WaitingForQuota":  # admitted (or grown) since: what waited is applied now
        plan.do(Apply("serving"), Requeue(DEPLOY_POLL_SECONDS))
        plan.note("serving objects applied; waiting for a ready replica", reason="Deploying")
        return
    serving = children.serving
    if serving is None:
        plan.do(Requeue(DEPLOY_POLL_SECONDS))
        return
    if serving.message == "missing":
        plan.do(Apply("serving"), Requeue(DEPLOY_POLL_SECONDS))
        return
    if not (serving.ready and serving.smoke_ok):
        waiting = serving.smoke_message if serving.ready else (serving.message or "waiting for a ready replica")
        plan.note(f"deploying: {waiting}"[:1024])
        plan.do(Requeue(DEPLOY_POLL_SECONDS))
        return
    gen = plan.generation
    canary = _canary_started(plan, settings)
    plan.set(serving=ServingStatus(endpoint=serving.endpoint, ready_replicas=serving.ready_replicas,
                                   deployment=names.serve_name(plan.name), served_generation=gen,
                                   model_names=[f"{plan.name}@{gen}", plan.name], canary=canary))
    plan.condition("Deployed", True, "Deployed", f"{serving.ready_replicas} ready replica(s)")
    plan.condition("Ready", True, "SmokeRequestOk", serving.smoke_message or "a chat completion came back")
    plan.transition("Serving", "Serving", f"serving at {serving.endpoint}")
    if canary is not None:
        spec = plan.job.spec.serving.canary
        assert spec is not None
        plan.event("CanaryStarted", f"{canary.share}% of requests to the tuned model ({_split_text(canary)}); "
                                    f"analysis for at least {spec.duration_seconds}s and {spec.min_requests} "
                                    f"request(s) per arm, deadline {spec.timeout_seconds}s")
        plan.do(Requeue(CANARY_POLL_SECONDS))


# -- the canary (reconcile/canary.py judges; DESIGN.md §5.4) -------------------------------------------

def _canary_started(plan: Plan, settings: OperatorSettings) -> CanaryStatus | None:
    if plan.job.spec.serving.canary is None:
        return None
    route = canary_route(plan.job, settings)
    return CanaryStatus(state="Analyzing", generation=plan.generation, split=route.split, share=route.share,
                        tuned_replicas=route.tuned_replicas, base_replicas=route.base_replicas,
                        started_at=plan.now_text, verdict="analysis started")


def _split_text(canary: CanaryStatus) -> str:
    if canary.split == "HTTPRoute":
        return "HTTPRoute weights"
    return f"replica ratio: {canary.tuned_replicas} tuned / {canary.tuned_replicas + canary.base_replicas} replicas"


def _current_canary(plan: Plan) -> CanaryStatus | None:
    serving = plan.status.serving
    canary = serving.canary if serving else None
    if canary is None or canary.generation != plan.generation or plan.job.spec.serving.canary is None:
        return None
    return canary


def _serving(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    """Serving waits for a spec change (handled before the phase step), or runs its canary to a verdict."""
    canary = _current_canary(plan)
    if canary is None:
        return
    if canary.state == "Analyzing":
        _analyze(plan, children, canary)
    else:
        _route_canary(plan, settings, canary)


def _analyze(plan: Plan, children: ObservedChildren, canary: CanaryStatus) -> None:
    """Read both arms, judge: keep analysing, promote, or roll back (the job ends `Rejected`). The new
    weights are applied by the next reconcile (`_route_canary`), after the verdict is recorded."""
    spec = plan.job.spec.serving.canary
    assert spec is not None
    started = parse_time(canary.started_at) or plan.now
    elapsed = (plan.now - started).total_seconds()
    shadow = _shadow(plan, children)
    arms = children.canary
    if arms is None:
        arms = Arms()
        if elapsed < spec.timeout_seconds:
            plan.do(Requeue(CANARY_POLL_SECONDS))
            return
    verdict = judge(spec, arms, elapsed, shadow)
    unread = f"; /metrics not read from {', '.join(arms.unread)}" if arms.unread else ""
    counts = {"tuned_requests": round(arms.tuned.requests), "base_requests": round(arms.base.requests)}
    if isinstance(verdict, Keep):
        # The reading is written once per poll: each write is a watch event and reconciles again.
        last = parse_time(canary.read_at)
        since = (plan.now - last).total_seconds() if last else CANARY_POLL_SECONDS
        if since >= CANARY_POLL_SECONDS:
            plan.update("serving", canary=revised(canary, verdict=(verdict.message + unread)[:1024],
                                                  read_at=plan.now_text, **counts))
        plan.do(Requeue(CANARY_POLL_SECONDS - since if since < CANARY_POLL_SECONDS else CANARY_POLL_SECONDS))
    elif isinstance(verdict, Promote):
        plan.update("serving", canary=revised(canary, state="Promoted", verdict=verdict.message[:1024], **counts))
        plan.event("CanaryPromoted", f"promoting the tuned model to 100%: {verdict.message}"[:1024])
    else:
        message = f"canary rolled back on {verdict.signal}: {verdict.message}{unread}"[:1024]
        plan.update("serving", canary=revised(canary, state="RolledBack", verdict=message, **counts))
        plan.condition("Ready", False, "CanaryRolledBack", message)
        plan.transition("Rejected", "CanaryRolledBack", message, warning=True)


def _shadow(plan: Plan, children: ObservedChildren) -> Shadow:
    """The canary's shadow grading: its Job created with the analysis (one of an older generation deleted
    first), and what it reported."""
    spec = plan.job.spec.serving.canary
    if spec is None or spec.shadow_grading is None:
        return NOT_GRADED
    job = children.jobs.get(names.shadow_job_name(plan.name))
    if job is None:
        plan.do(Create("shadow"))
        return NOT_GRADED
    if job.generation != plan.generation:
        if not job.deleting:
            plan.do(Delete("Job", job.name))
        return NOT_GRADED
    if job.outcome == "failed":
        return Shadow(failure=job.failure_text())
    summary = job.summary(ShadowSummary)
    if job.outcome == "succeeded" and (summary is None or not summary.ok):
        return Shadow(failure=(summary.message if summary else None) or "the shadow Job ended without a summary")
    return Shadow(summary=summary if job.outcome == "succeeded" else None)


def _route_canary(plan: Plan, settings: OperatorSettings, canary: CanaryStatus) -> None:
    """After a verdict: apply the arms at 100 % or 0 % (the builders read the verdict from the status),
    then record the share now routed."""
    route = canary_route(plan.job, settings)
    if (canary.share, canary.tuned_replicas, canary.base_replicas) == (route.share, route.tuned_replicas,
                                                                        route.base_replicas):
        return
    routed = revised(canary, share=route.share, split=route.split, tuned_replicas=route.tuned_replicas,
                     base_replicas=route.base_replicas)
    plan.do(Apply("serving"))
    plan.update("serving", canary=routed)
    model = "tuned model" if canary.state == "Promoted" else "base model (rolled back)"
    plan.event("CanaryRouted", f"all requests to the {model}: tuned share {route.share}% ({_split_text(routed)})")


def _rejected(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    """Rejected waits for a spec change; a canary rolled back still routes everything to the base."""
    canary = _current_canary(plan)
    if canary is not None and canary.state == "RolledBack":
        _route_canary(plan, settings, canary)


def _idle(plan: Plan, children: ObservedChildren, settings: OperatorSettings) -> None:
    """Succeeded waits for a spec change (handled before the phase step)."""


_PHASES = {
    "Pending": _pending,
    "Validating": _validating,
    "Queued": _queued,
    "Training": _training,
    "Evaluating": _evaluating,
    "Uploading": _uploading,
    "Deploying": _deploying,
    "Serving": _serving,
    "Succeeded": _idle,
    "Rejected": _rejected,
}

"""What the operator observed of a job's children, reduced to the facts decisions need.

The handlers build these from watch events (never from extra reads); `decide` takes them as plain
values, so every transition is a pure function of (job, observed children, now).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from finetune_api.contract.exit_codes import FailureClass, failure_class
from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.termination import PhaseSummary
from finetune_api.queue import Flavor, PoolAdmission
from ..builders.names import service_url
from ..builders.training_job import training_failure_kind
from .canary import Arms

JobOutcome = Literal["running", "succeeded", "failed"]
Summary = TypeVar("Summary", bound=PhaseSummary)
JobFailureClass = FailureClass | Literal["deadline", "disk-full"]
"""The contract's exit-code classes, plus a Job stopped at its `activeDeadlineSeconds`."""


@dataclass(frozen=True)
class PodState:
    """One pod of a child Job: enough to classify its end and to find the rank-0 trainer."""

    name: str
    phase: str = "Pending"
    exit_code: int | None = None
    message: str = ""
    """The termination message of the container that ended the pod (its first failure)."""
    init_messages: tuple[str, ...] = ()
    """The init containers' termination messages (the merge before an evaluation)."""
    reason: str = ""
    disrupted: bool = False
    index: int | None = None
    started_at: str | None = None
    waiting: str = ""
    """Why a container has not started or not become ready ("ImagePullBackOff: …"), or why the pod is
    not scheduled; what a deadline message names."""
    owner_uid: str = ""
    """The uid of the pod's controller (its batch Job): pods of a deleted Job of the same name are not ours."""


@dataclass(frozen=True)
class JobState:
    """One batch/v1 Job child and its pods."""

    name: str
    outcome: JobOutcome = "running"
    failure_reason: str = ""
    failure_message: str = ""
    finished_at: str | None = None
    started_at: str | None = None
    suspended: bool = False
    deleting: bool = False
    generation: int = 0
    """The FineTuneJob generation the child was built from (`finetune.dev/generation`)."""
    uid: str = ""
    owner_uid: str = ""
    """The uid of the Job's controller: children are matched by it, not by labels alone."""
    pods: tuple[PodState, ...] = ()

    def summary(self, model: type[Summary]) -> Summary | None:
        """The trainer's termination message of `model`'s phase (first pod that left one; rank 0 first)."""
        for pod in sorted(self.pods, key=lambda p: (p.index is None, p.index or 0)):
            for message in (pod.message, *pod.init_messages):
                parsed = model.parse(message)
                if parsed is not None:
                    return parsed
        return None

    def exit_codes(self) -> list[int]:
        return [p.exit_code for p in self.pods if p.exit_code is not None]

    def failure_class(self) -> JobFailureClass:
        """The contract's classes: exit 1 is the user's (the Job's user-error rule says so too); a
        disruption (preemption, drain, eviction) is free; a Job past its `activeDeadlineSeconds` is out of
        time; a trainer that ran out of disk says so (never retried: the volume is still full); the rest is
        infrastructure."""
        if self.failure_reason == "deadline":
            return "deadline"
        summary = self.summary(PhaseSummary)
        if summary is not None and summary.reason == "DiskFull":
            return "disk-full"
        if self.failure_reason == "user":
            return "user"
        disrupted = self.failure_reason == "preempted" or any(p.disrupted for p in self.pods)
        return failure_class(self.exit_codes(), disrupted)

    def failure_text(self) -> str:
        """A one-line reason: the trainer's own error when it left one, else exit codes and the Job's."""
        summary = self.summary(PhaseSummary)
        if summary is not None and not summary.ok and summary.message:
            return summary.message
        codes = sorted(set(self.exit_codes()))
        parts = []
        if codes:
            parts.append("exit code " + ", ".join(str(c) for c in codes))
        reasons = sorted({p.reason for p in self.pods if p.reason and p.exit_code not in (None, 0)})
        if reasons:
            parts.append("/".join(reasons))
        if self.failure_message:
            parts.append(self.failure_message)
        return "; ".join(parts) or "the Job failed"

    def waiting_text(self) -> str:
        """What the Job was waiting for, for a deadline message: its pods' waiting reasons, else its state."""
        waiting = sorted({f"pod {p.name}: {p.waiting}" for p in self.pods if p.waiting})
        if waiting:
            return "; ".join(waiting)
        if not self.pods:
            return "no pod was created" + (" (the Job is suspended)" if self.suspended else "")
        running = [p.name for p in self.pods if p.phase == "Running"]
        return f"pod {', '.join(running)} still running" if running else "its pods did not finish"


@dataclass(frozen=True)
class WorkloadState:
    """Kueue mode: the Workload of the suspended training Job, mirrored into status.queue."""

    name: str
    admitted: bool = False
    quota_reserved: bool = False
    evicted: bool = False
    message: str = ""
    flavor: str | None = None


@dataclass(frozen=True)
class ServingState:
    """The serving objects as read during Deploying, and the smoke request's verdict."""

    ready: bool = False
    ready_replicas: int = 0
    message: str = ""
    smoke_ok: bool | None = None
    smoke_message: str = ""
    endpoint: str = ""
    pods_waiting: str = ""
    """Why the serving pods are not ready ("ImagePullBackOff: …"), read from their container statuses."""


@dataclass(frozen=True)
class JudgePool:
    """The namespace's adapter pool for the job's base, read for its `score_model` graders without
    `endpoint` (they ask the base model that pool serves)."""

    name: str
    url: str | None
    """The pool's Service URL (`ready_service_url`) while it has a ready replica; None when it has none or
    does not exist."""


@dataclass(frozen=True)
class NamespaceUsage:
    """What the other started jobs of the job's namespace hold (for `settings.namespace_caps`)."""

    jobs: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class ObservedChildren:
    """Everything observed about one FineTuneJob's children (keyed by child name)."""

    jobs: dict[str, JobState] = field(default_factory=dict)
    flavor: Flavor | None = None
    """The admitted flavor of the FineTuneQueue (embedded queue mode)."""
    eviction_grace_seconds: int | None = None
    """The queue's preemption grace period (SIGTERM lets the trainer checkpoint)."""
    workload: WorkloadState | None = None
    serving: ServingState | None = None
    progress: ProgressEvent | None = None
    """The rank-0 trainer's latest progress (finetune_api.contract.progress)."""
    config_spec: dict[str, Any] | None = None
    """The spec the job's ConfigMap was rendered from (read only when the generation moved)."""
    namespace_usage: NamespaceUsage | None = None
    """Read for a Pending job whose namespace has caps."""
    canary: Arms | None = None
    """Both arms' counts in the canary's analysis window (read while its analysis runs)."""
    judge_pool: JudgePool | None = None
    """Read while a job with pool-judged graders validates, trains or evaluates."""
    pool: PoolAdmission | None = None
    """The admission of the adapter pool that serves the job, when the embedded queue charges pools
    (`adapter_pool.queue`); None when it does not, or the job is not served by a pool. Read from Training on."""


# -- from API objects -----------------------------------------------------------------------------

def pod_state(pod: dict[str, Any]) -> PodState:
    """Reduce a Pod to its end state (the first terminated container with a non-zero code wins)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    exit_code, message, reason = None, "", ""
    for cs in status.get("containerStatuses") or []:
        term = _terminated(cs)
        if not term:
            continue
        code = term.get("exitCode")
        if exit_code is None or (code not in (None, 0) and exit_code == 0):
            exit_code, message, reason = code, term.get("message") or "", term.get("reason") or ""
    init_messages = tuple(m for cs in status.get("initContainerStatuses") or [] if (m := _terminated(cs).get("message")))
    disrupted = any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    waiting = ""
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = (cs.get("state") or {}).get("waiting")
        if state and state.get("reason") not in (None, "", "ContainerCreating", "PodInitializing"):
            waiting = ": ".join(x for x in (state.get("reason"), state.get("message")) if x)
            break
    if not waiting:
        unscheduled = next((c for c in status.get("conditions") or []
                            if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
        if unscheduled:
            waiting = ": ".join(x for x in (unscheduled.get("reason") or "Unschedulable", unscheduled.get("message")) if x)
    raw_index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index") or (
        meta.get("labels") or {}
    ).get("batch.kubernetes.io/job-completion-index")
    return PodState(
        name=meta.get("name", ""),
        phase=status.get("phase") or "Pending",
        exit_code=exit_code,
        message=message,
        init_messages=init_messages,
        reason=reason,
        disrupted=disrupted,
        index=int(raw_index) if raw_index not in (None, "") else None,
        started_at=status.get("startTime"),
        waiting=waiting[:512],
        owner_uid=controller_uid(meta),
    )


def ready_service_url(service: str, namespace: str, endpoint_slices: list[dict[str, Any]], port: int,
                      addressing: Literal["dns", "endpoints"]) -> str | None:
    """Where the operator's clients call a Service that has a ready endpoint (None while it has none):
    its cluster DNS name on `port`, or with `endpoints` addressing (an operator outside the cluster,
    `OperatorSettings.service_addressing`) that endpoint's pod address."""
    endpoint = ready_endpoint_url(endpoint_slices)
    if endpoint is None or addressing == "endpoints":
        return endpoint
    return service_url(service, namespace, port)


def ready_endpoint_url(endpoint_slices: list[dict[str, Any]]) -> str | None:
    """`http://<address>:<port>` of the first ready endpoint of a Service's EndpointSlices (the `http`
    port, else the first); None when none is ready."""
    for es in endpoint_slices:
        ports = es.get("ports") or []
        target = next((p.get("port") for p in ports if p.get("name") == "http"), None) or (
            ports[0].get("port") if ports else None)
        for ep in es.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addresses = ep.get("addresses") or []
            if addresses and target:
                host = addresses[0]
                return f"http://[{host}]:{target}" if ":" in host else f"http://{host}:{target}"
    return None


def _terminated(container_status: dict[str, Any]) -> dict[str, Any]:
    state, last = container_status.get("state") or {}, container_status.get("lastState") or {}
    terminated: dict[str, Any] = state.get("terminated") or last.get("terminated") or {}
    return terminated


def with_pods(state: JobState, pods: tuple[PodState, ...]) -> JobState:
    """`state` with its pods. A Job that has ended while none of its pods is seen ended is still running
    here: Jobs and pods come on separate watch streams, so the Job controller's verdict can arrive before
    the pod whose end it counted, and that pod's termination message is the phase's summary (read too
    early, "ended without a summary"). A pod has ended when its phase says so (a failed init container
    leaves the main one without an exit code) or a container has an exit code. The pod's event reconciles
    again; a pod that is gone holds nothing."""
    if state.outcome != "running" and pods and not any(p.phase in ("Succeeded", "Failed") or p.exit_code is not None
                                                       for p in pods):
        return replace(state, pods=pods, outcome="running")
    return replace(state, pods=pods)


def job_state(job: dict[str, Any], pods: list[PodState] | tuple[PodState, ...] = ()) -> JobState:
    """Reduce a batch/v1 Job (its conditions decide the outcome; pods explain it)."""
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    outcome: JobOutcome = "running"
    failure_message, finished_at = "", None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            outcome, finished_at = "succeeded", cond.get("lastTransitionTime")
        elif cond.get("type") in ("Failed", "FailureTarget") and outcome != "succeeded":
            outcome, finished_at = "failed", cond.get("lastTransitionTime")
            failure_message = cond.get("message") or cond.get("reason") or ""
    if outcome == "running" and status.get("completionTime"):
        outcome, finished_at = "succeeded", status["completionTime"]
    kind = training_failure_kind(status) if outcome == "failed" else None
    return JobState(
        name=meta.get("name", ""),
        outcome=outcome,
        failure_reason=kind or "",
        failure_message=failure_message,
        finished_at=finished_at,
        started_at=status.get("startTime"),
        suspended=bool(spec.get("suspend")),
        deleting=bool(meta.get("deletionTimestamp")),
        generation=int((meta.get("annotations") or {}).get("finetune.dev/generation") or 0),
        uid=meta.get("uid") or "",
        owner_uid=controller_uid(meta),
        pods=tuple(pods),
    )


def controller_uid(meta: dict[str, Any]) -> str:
    """The uid of the object's controller ownerReference ("" when none)."""
    return next((o.get("uid") or "" for o in meta.get("ownerReferences") or [] if o.get("controller")), "")


def workload_state(workload: dict[str, Any]) -> WorkloadState:
    """Reduce a Kueue Workload (v1beta1 or v1beta2: the same fields here) to what status.queue mirrors."""
    status = workload.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}

    def true(name: str) -> bool:
        return (conds.get(name) or {}).get("status") == "True"

    flavors = [
        f for ps in ((status.get("admission") or {}).get("podSetAssignments") or [])
        for f in (ps.get("flavors") or {}).values()
    ]
    message = next((c.get("message", "") for c in reversed(list(conds.values())) if c.get("message")), "")
    return WorkloadState(
        name=(workload.get("metadata") or {}).get("name", ""),
        admitted=true("Admitted"),
        quota_reserved=true("QuotaReserved"),
        evicted=true("Evicted"),
        message=message,
        flavor=flavors[0] if flavors else None,
    )


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""`ftctl status JOB` and `ftctl logs JOB`: a FineTuneJob on a cluster, with the kubeconfig kubectl uses
(`KUBECONFIG` or ~/.kube/config, its current context and namespace; `--kubeconfig`, `--context`, `-n`).

`status` reads the job through the API models (phase, progress, data, evaluation table, gates, serving).
`logs` finds the pods of a phase by the labels every child carries (`finetune.dev/job`,
`finetune.dev/phase`; for training the rank-0 pod of the latest attempt) and streams `pods/log`, so nobody
needs to know pod names.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from finetune_api import FineTuneJob
from finetune_api.job import FineTuneJobStatus
from finetune_operator.builders.common import LABEL_JOB, LABEL_PHASE
from finetune_operator.k8s import RESOURCES

from .figures import training_figures
from .main import POD_PHASES

JOBS = RESOURCES["FineTuneJob"]
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
PODS_OF_PHASE = {"Validating": "prepare", "Queued": "train", "Training": "train", "Evaluating": "eval",
                 "Uploading": "upload", "Deploying": "serve", "Serving": "serve"}
"""Whose logs `ftctl logs` shows by default: the pods of the job's current phase."""
EXIT_OK, EXIT_ERROR = 0, 1


class ClusterError(Exception):
    """A problem to print as one line (no traceback): what failed and why."""


def _api(args: argparse.Namespace) -> tuple[Any, str]:
    """An API client and the namespace, resolved from the kubeconfig as kubectl does."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, current = config.list_kube_config_contexts(config_file=args.kubeconfig)
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (ConfigException, FileNotFoundError) as e:
        raise ClusterError(f"no usable kubeconfig ({e}); set KUBECONFIG or pass --kubeconfig") from None
    context = next((c for c in contexts if c["name"] == args.context), current) if args.context else current
    namespace = args.namespace or (context.get("context") or {}).get("namespace") or "default"
    return api, namespace


def _call(what: str, fn: Any, *a: Any, **kw: Any) -> Any:
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*a, **kw)
    except ApiException as e:
        raise ClusterError(f"{what}: {e.status} {e.reason}: {_api_message(e)}") from None
    except (HTTPError, OSError) as e:
        raise ClusterError(f"{what}: cannot reach the API server: {e}") from None


def _api_message(e: Any) -> str:
    import json

    try:
        return str(json.loads(e.body).get("message") or e.body)
    except (ValueError, TypeError, AttributeError):
        return str(e.body or "").strip()


def read_job(api: Any, namespace: str, name: str) -> FineTuneJob:
    from kubernetes import client

    obj = _call(f"FineTuneJob {namespace}/{name}", client.CustomObjectsApi(api).get_namespaced_custom_object,
                JOBS.group, JOBS.version, namespace, JOBS.plural, name)
    return FineTuneJob.model_validate(obj)


def format_status(job: FineTuneJob) -> str:
    """The job as a person reads it: one block per part of the status that is set."""
    status = job.status or FineTuneJobStatus()
    lines = [f"{job.metadata.namespace}/{job.metadata.name}: {status.phase}"
             + (f" ({status.reason})" if status.reason else "")]
    if status.message:
        lines.append(f"  {status.message}")
    if status.queue and status.queue.message and status.phase in ("Pending", "Queued"):
        lines.append(f"  queue {status.queue.name}: {status.queue.message}")
    if status.data:
        d = status.data
        lines.append(f"data: {d.train_examples} train, {d.validation_examples} validation, {d.eval_examples} eval "
                     f"examples; {d.train_tokens} train tokens" + (f"; {d.warnings} warnings" if d.warnings else ""))
    if status.progress:
        p = status.progress
        parts = [f"training: step {p.step}/{p.total_steps}", *training_figures(p.loss, p.eval_loss, p.tokens_per_second)]
        if p.eta_seconds and p.step < p.total_steps:
            parts.append(f"ETA {p.eta_seconds}s")
        lines.append(", ".join(parts) if p.total_steps else f"training: {p.summary or 'starting'}")
    if status.attempts.count > 1 or status.attempts.last_failure:
        lines.append(f"attempts: {status.attempts.count}" + (f" (last failure: {status.attempts.last_failure})"
                                                            if status.attempts.last_failure else ""))
    if status.evaluation and status.evaluation.metrics:
        ev = status.evaluation
        lines.append(f"evaluation on {ev.items} held-out items:")
        lines.append(f"  {'metric':<22} {'base':>8} {'tuned':>8} {'delta':>8}")
        for m in ev.metrics:
            lines.append(f"  {m.name:<22} {_num(m.base):>8} {_num(m.tuned):>8} {_num(m.delta):>8}")
        for g in ev.gates:
            lines.append(f"  gate {'passed' if g.passed else 'FAILED'}: {g.message or g.metric}")
    if status.serving and status.serving.endpoint:
        s = status.serving
        lines.append(f"serving: {s.endpoint} models {', '.join(s.model_names)} ({s.ready_replicas} ready)")
        if s.canary is not None:
            c = s.canary
            lines.append(f"canary: {c.state}, tuned share {c.share}% ({c.split}: {c.tuned_replicas} tuned / "
                         f"{c.base_replicas} base replicas); {c.verdict}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def phase_pods(api: Any, job: FineTuneJob, phase: str) -> list[dict[str, Any]]:
    """The job's pods of one phase (label selector), as plain objects."""
    from kubernetes import client

    namespace = job.metadata.namespace or "default"
    pods = _call(f"pods of {namespace}/{job.metadata.name}", client.CoreV1Api(api).list_namespaced_pod, namespace,
                 label_selector=f"{LABEL_JOB}={job.metadata.name},{LABEL_PHASE}={phase}")
    return [api.sanitize_for_serialization(p) for p in pods.items]


def pick_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod whose log tells the story: of the newest pod's Kubernetes Job (the latest attempt), its rank 0
    (completion index 0), the newest of those (a retried pod replaces a failed one)."""
    if not pods:
        return None

    def created(pod: dict[str, Any]) -> str:
        return str(pod["metadata"].get("creationTimestamp") or "")

    def owner(pod: dict[str, Any]) -> str:
        return str((pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL, ""))

    latest = owner(max(pods, key=created))
    attempt = [p for p in pods if owner(p) == latest]
    rank0 = [p for p in attempt if (p["metadata"].get("annotations") or {}).get(COMPLETION_INDEX) in (None, "0")]
    return max(rank0 or attempt, key=created)


def stream_logs(api: Any, namespace: str, pod: str, *, follow: bool, tail: int | None, out: Any) -> None:
    from kubernetes import client

    kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
    if tail is not None:
        kwargs["tail_lines"] = tail
    response = _call(f"logs of pod {namespace}/{pod}", client.CoreV1Api(api).read_namespaced_pod_log, pod, namespace,
                     **kwargs)
    try:
        for chunk in response.stream(4096):
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
    finally:
        response.release_conn()


def cmd_status(args: argparse.Namespace) -> int:
    try:
        api, namespace = _api(args)
        print(format_status(read_job(api, namespace, args.job)))
    except ClusterError as e:
        print(f"ftctl status: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        api, namespace = _api(args)
        job = read_job(api, namespace, args.job)
        phase = args.phase or PODS_OF_PHASE.get(job.status.phase if job.status else "Pending")
        if phase is None:
            raise ClusterError(f"{namespace}/{args.job} is {job.status.phase if job.status else 'Pending'}: "
                               f"name a phase with --phase ({', '.join(POD_PHASES)})")
        pod = pick_pod(phase_pods(api, job, phase))
        if pod is None:
            raise ClusterError(f"{namespace}/{args.job} has no {phase} pod (yet, or any more)")
        stream_logs(api, namespace, pod["metadata"]["name"], follow=args.follow, tail=args.tail,
                    out=sys.stdout)
    except ClusterError as e:
        print(f"ftctl logs: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK

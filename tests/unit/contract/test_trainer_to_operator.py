"""The real trainer's output, read by the operator's and `ftctl run`'s readers.

prepare → train (through the pods' launcher) → evaluate on the tiny model, then every file, termination
message and progress line they left is fed to the readers (`pod_state`/`job_state`, `latest_progress`,
`decide`; `PhaseResult`, the local report): the final training loss, the validation loss, the weights'
digest and, on failure, the trainer's own error text must reach the FineTuneJob's status.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_api.contract.artifacts import tree_digest
from finetune_api.contract.launch import ATTEMPT_ENV, Topology, launch_argv, launch_env
from finetune_api.contract.progress import read_events
from finetune_api.contract.summaries import EvaluateSummary, PrepareSummary, TrainSummary
from finetune_api.resolved import ResolvedConfig
from finetune_cli.local.processes import PhaseResult
from finetune_cli.local.report import loss_curves, plot_loss, read_progress
from finetune_operator.progress import latest_progress
from finetune_operator.reconcile import ObservedChildren, decide, job_state, pod_state
from finetune_operator.settings import OperatorSettings
from finetune_trainer.phases import evaluate as evaluate_phase
from finetune_trainer.phases import prepare as prepare_phase
from tests.unit.operator.reconcile.conftest import apply_patch, status_patch
from tests.unit.trainer.train.conftest import QUICKSTART, layout_of, subprocess_env, write_jsonl

pytestmark = [pytest.mark.unit, pytest.mark.slow]

NOW = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
SETTINGS = OperatorSettings(queue_mode="embedded")
# A few steps with an evaluation every 2 (the validation loss), and a small held-out set (the validation
# split doubles as it) answered greedily in a few tokens.
SPEC: dict[str, Any] = {
    "datasets": {"validation": {"uri": "validation.jsonl", "format": "messages"}},
    "hyperparameters": {"maxSteps": 4, "saveSteps": 2, "loggingSteps": 1},
    "evaluation": {"enabled": True, "backend": "transformers", "compareToBase": False, "maxItems": 8,
                   "maxNewTokens": 4, "metrics": ["exact_match"], "bootstrapSamples": 100},
}


def validation_rows(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in (QUICKSTART / "validation.jsonl").read_text().splitlines()[:8]]
    return write_jsonl(tmp_path / "validation.jsonl", rows)


def in_process_phase(main: Any, config_file: Path, log: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """A phase's container entry point, with its termination message file (as `FT_TERMINATION_LOG`)."""
    monkeypatch.setenv("FT_TERMINATION_LOG", str(log))
    return int(main(str(config_file))), log.read_text()


def launch_training(config: ResolvedConfig, config_file: Path, log: Path, attempt: int) -> subprocess.CompletedProcess[str]:
    """The training pod's command on this machine: our launcher wrapper around torchrun, one process."""
    spec = config.spec
    argv = launch_argv(spec, str(config_file), Topology.local(spec, nproc=1))
    env = subprocess_env(**launch_env(spec), FT_TERMINATION_LOG=str(log), **{ATTEMPT_ENV: str(attempt)})
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def pod(exit_code: int, message: str, log_tail: str = "") -> dict[str, Any]:
    """A Pod as the API server returns it once its container ended with `message` in the termination log."""
    return {"metadata": {"name": "tiny-x", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": "2030-01-01T11:00:00Z",
                       "containerStatuses": [{"name": "trainer", "state": {"terminated": {
                           "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                           "message": message}}}]}}


def child(name: str, exit_code: int | None, message: str = "") -> Any:
    """A child Job (running when `exit_code` is None) and its pod, reduced by the operator's readers."""
    meta = {"name": name, "annotations": {"finetune.dev/generation": "1"}}
    if exit_code is None:
        return job_state({"metadata": meta, "status": {"startTime": "2030-01-01T11:00:00Z"}})
    condition = {"type": "Complete", "status": "True", "lastTransitionTime": "2030-01-01T11:30:00Z"}
    if exit_code != 0:
        condition = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                     "lastTransitionTime": "2030-01-01T11:30:00Z",
                     "message": f"Container trainer for pod x failed with exit code {exit_code} matching FailJob rule at index 0"}
    body = {"metadata": meta, "status": {"startTime": "2030-01-01T11:00:00Z", "conditions": [condition]}}
    return job_state(body, [pod_state(pod(exit_code, message))])


def the_job(config: ResolvedConfig, phase: str, **status: Any) -> FineTuneJob:
    return FineTuneJob.model_validate({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "tiny", "namespace": "team", "generation": 1},
        "spec": config.spec.to_api(),
        "status": {"phase": phase, "phaseStartedAt": "2030-01-01T11:00:00Z", "observedGeneration": 1, **status},
    })


def reconcile(job: FineTuneJob, *jobs: Any, **observed: Any) -> FineTuneJob:
    """One decision on what the readers observed; the job as the API server holds it after the patch."""
    children = ObservedChildren(jobs={j.name: j for j in jobs}, **observed)
    return apply_patch(job, status_patch(decide(job, children, NOW, SETTINGS)))


def test_a_finished_run_reports_its_losses_weights_and_verdict_into_status(
    make_run: Any, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_run(SPEC, validation=validation_rows(tmp_path))
    layout = layout_of(config)

    code, prepared = in_process_phase(prepare_phase.main, config_path, tmp_path / "prepare.log", monkeypatch)
    assert code == 0, prepared
    trained = launch_training(config, config_path, tmp_path / "train.log", attempt=1)
    assert trained.returncode == 0, trained.stderr[-4000:]
    train_message = (tmp_path / "train.log").read_text()
    code, evaluated = in_process_phase(evaluate_phase.main, config_path, tmp_path / "eval.log", monkeypatch)
    assert code == 0, evaluated

    # what the trainer says, read through the contract
    summary = TrainSummary.parse(train_message)
    assert summary is not None and summary.ok and summary.step == 4 and summary.train_loss is not None
    events = read_events(trained.stdout.splitlines())
    validation = [e.eval_loss for e in events if e.eval_loss is not None]
    assert [e.step for e in events if e.eval_loss is not None] == [2, 4] and summary.eval_loss == validation[-1]
    assert summary.weights is not None and summary.weights.digest == tree_digest(layout.adapter)
    assert json.loads(layout.run_json.read_text())["attempt"] == 1  # FT_ATTEMPT, not the config's 0

    # the operator: Validating → (admitted) Training with progress → Evaluating → Succeeded
    job = reconcile(the_job(config, "Validating"), child("tiny-prepare", 0, prepared))
    assert job.status is not None and job.status.phase == "Queued" and job.status.data is not None
    assert job.status.data.train_examples == 400 and job.status.data.validation_examples == 8

    running = the_job(config, "Training", attempts={"count": 1}, queue={"name": "default", "admitted": True})
    job = reconcile(running, child("tiny-train-a0", None), progress=latest_progress(trained.stdout))
    assert job.status is not None and job.status.progress is not None
    train_losses = [e.loss for e in events if e.loss is not None]
    assert len(train_losses) == 4  # one per step, and the evaluations in between
    assert (job.status.progress.step, job.status.progress.loss, job.status.progress.eval_loss) == (
        4, train_losses[-1], validation[-1])

    job = reconcile(job, child("tiny-train-a0", 0, train_message))
    assert job.status is not None and job.status.phase == "Evaluating" and job.status.progress is not None
    assert (job.status.progress.loss, job.status.progress.eval_loss) == (summary.train_loss, summary.eval_loss)
    artifacts = job.status.artifacts
    assert artifacts is not None and artifacts.root == "pvc://finetune-artifacts/team/tiny"
    assert artifacts.adapter == f"{artifacts.root}/adapter" and artifacts.adapter_digest == tree_digest(layout.adapter)
    assert artifacts.checkpoint == f"{artifacts.root}/checkpoints/checkpoint-4"

    job = reconcile(job, child("tiny-eval", 0, evaluated))
    assert job.status is not None and job.status.phase == "Succeeded" and job.status.evaluation is not None
    verdict = EvaluateSummary.parse(evaluated)
    assert verdict is not None and job.status.evaluation.items == verdict.items == 8
    assert [m.name for m in job.status.evaluation.metrics] == ["exact_match"]
    assert job.status.artifacts is not None and job.status.artifacts.eval_report == f"{artifacts.root}/eval/report.json"
    assert job.status.artifacts.adapter_digest == artifacts.adapter_digest  # the merge patch kept it

    # ftctl run's readers: the termination message, and the report's loss plot with its validation curve
    local = PhaseResult("train", trained.returncode, train_message)
    assert local.summary(TrainSummary) == summary
    train_points, validation_points = loss_curves(read_progress(layout.progress_log))
    assert len(train_points) == 4 and [s for s, _ in validation_points] == [2, 4]
    assert plot_loss(read_progress(layout.progress_log), tmp_path / "loss.png") is not None


def test_a_user_error_reaches_status_in_the_trainers_words(
    make_run: Any, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_run()

    # bad training data: the prepare phase names the line and the rule; Validating fails with that text
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    bad_data = tmp_path / "bad-data.json"
    bad_data.write_text(config.model_copy(update={"paths": config.paths.model_copy(update={"train": str(bad)})})
                        .model_dump_json(by_alias=True))
    code, prepared = in_process_phase(prepare_phase.main, bad_data, tmp_path / "prepare.log", monkeypatch)
    failure = PrepareSummary.parse(prepared)
    assert code == 1 and failure is not None and failure.reason == "UserError" and failure.message
    assert str(bad) in failure.message
    job = reconcile(the_job(config, "Validating"), child("tiny-prepare", 1, prepared))
    assert job.status is not None and (job.status.phase, job.status.reason) == ("Failed", "ValidationFailed")
    assert job.status.message == failure.message

    # a bad config in training: the worker's own error, through the launcher, exit 1 (never retried)
    bad_config = tmp_path / "bad-config.json"
    body = json.loads(config_path.read_text())
    body["spec"]["hyperparameters"]["learningRate"] = 5
    bad_config.write_text(json.dumps(body))
    trained = launch_training(config, bad_config, tmp_path / "train.log", attempt=0)
    train_message = (tmp_path / "train.log").read_text()
    failure = TrainSummary.parse(train_message)
    assert trained.returncode == 1, trained.stderr[-4000:]
    assert failure is not None and failure.reason == "UserError" and "learningRate" in (failure.message or "")
    running = the_job(config, "Training", attempts={"count": 1}, queue={"name": "default", "admitted": True})
    job = reconcile(running, child("tiny-train-a0", 1, train_message))
    assert job.status is not None and (job.status.phase, job.status.reason) == ("Failed", "TrainingFailed")
    assert failure.message and failure.message in job.status.message
    assert job.status.attempts.infrastructure_failures == 0
    one_line = PhaseResult("train", trained.returncode, train_message).reason  # ftctl run's line: the trainer's words
    assert one_line and " ".join(failure.message.split()).startswith(one_line)

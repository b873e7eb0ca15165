"""`ftctl run`: the whole pipeline from one manifest on this machine (DESIGN.md §7).

prepare → baseline (the base model on the held-out set; its outputs are kept) → train (N processes)
→ evaluate tuned against base → gates → serve with a local vLLM and one
chat request → report. Each phase is the same `python -m finetune_trainer <phase>` a pod runs.
Exit codes: 0 passed, 3 rejected by a gate, 1 user error, 2 infrastructure (run again to resume).
"""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from finetune_api import FineTuneJob
from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK, USER_ERROR, failure_class, is_retried
from finetune_api.contract.launch import ATTEMPT_ENV
from finetune_api.contract.progress import ProgressEvent
from finetune_api.contract.sources import FetchSummary
from finetune_api.contract.summaries import EvaluateSummary, PrepareSummary
from finetune_api.contract.upload import UploadSummary
from finetune_api.job import DataReport, RetrySpec
from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_api.sources import parse_source
from finetune_operator.builders.eval_job import merges_before_eval
from finetune_trainer.fetch.cache import SourceCache
from finetune_trainer.fetch.run import holder_name
from finetune_trainer.process_group import StopRequested
from finetune_trainer.train.checkpoint import checkpoint_step, latest_checkpoint

from ..manifests import load_job
from .config import BOOTSTRAP_ANNOTATION, inapplicable_fields, local_config
from .disk import DiskFull, check_free_space, estimated_bytes, free_bytes
from .lock import LOCK_NAME, WorkdirBusy, WorkdirLock
from .processes import PhaseResult, phase_log, run_phase_process
from ..figures import training_figures
from .report import read_progress, write_report
from .resume import PhaseRecords

EXIT_PASSED, EXIT_USER, EXIT_INFRA, EXIT_REJECTED = OK, USER_ERROR, INFRASTRUCTURE_ERROR, 3


@dataclass
class RunState:
    """What the run learned so far; the report, the final table and the last line read it."""

    phases: list[tuple[str, float, str]] = field(default_factory=list)
    data: DataReport | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    answer: str | None = None
    current: str | None = None  # the phase running now
    progress: tuple[int, int | None] | None = None  # its last (step, total)
    failed: str | None = None  # the phase that failed
    served: bool | None = None  # None: not attempted
    stopped_by: str | None = None  # the signal's name
    unevaluated: bool = False  # trained with `evaluation.enabled: false`: no gates to pass


ServeMode = Literal["off", "answer", "keep"]  # no serving; serve, ask one question, stop; and go on serving


class PhaseFailed(Exception):
    """A phase ended badly: the exit code of the run and one line on what to change."""

    def __init__(self, phase: str, exit_code: int, reason: str, log_path: Path | None = None) -> None:
        super().__init__(f"{phase}: {reason}" + (f" (log: {log_path})" if log_path else ""))
        self.phase, self.exit_code = phase, exit_code


def verdict(state: RunState) -> str:
    """The run's verdict over every phase: the report's title and the terminal's `verdict:` line."""
    if state.stopped_by and not state.served:  # a stop after the answer (--keep-serving) ends a finished run
        return f"STOPPED during {state.current}" if state.current else "STOPPED"
    if state.unevaluated:  # as the operator: trained, then served (or Succeeded) without gates
        return "TRAINED (evaluation disabled), SERVING FAILED" if state.served is False else "TRAINED (evaluation disabled)"
    passed = state.evaluation.get("passed")
    if passed is True:
        return "PASSED gates, SERVING FAILED" if state.served is False else "PASSED"
    if passed is False:
        return "REJECTED"
    if state.failed:
        return f"FAILED in {state.failed}"
    return "incomplete"


def trainer_argv(phase: str, config_path: Path, *flags: str) -> list[str]:
    """A single-process trainer phase."""
    return [sys.executable, "-m", "finetune_trainer", phase, "--config", str(config_path), *flags]


def train_launch(config: ResolvedConfig, config_path: Path, processes: int, attempt: int) -> tuple[list[str], dict[str, str]]:
    """The training launch (argv, extra env) of attempt `attempt` (0-based, as the operator counts):
    the same launcher the pods use, on this machine."""
    from finetune_api.contract.launch import Topology, launch_argv, launch_env

    topology = Topology.local(config.spec, processes)
    return launch_argv(config.spec, str(config_path), topology), {**launch_env(config.spec), ATTEMPT_ENV: str(attempt)}


def phase_exit_code(returncode: int) -> int:
    """`ftctl run`'s exit code for a failed phase: the contract's failure class (1 user, 2 anything else)."""
    return EXIT_USER if failure_class([returncode]) == "user" else EXIT_INFRA


def train_with_retries(
    retry: RetrySpec,
    attempt_once: Callable[[int], PhaseResult],
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> PhaseResult:
    """Training attempts as the operator makes them (`spec.retry`): a user error (exit 1) or a full
    disk is final, any other failure is retried after the backoff, and each retry resumes from the
    latest checkpoint."""
    attempt = 1
    while True:
        result = attempt_once(attempt)
        if not is_retried(result.returncode) or result.disk_full or attempt >= retry.max_attempts:
            return result
        say(f"training attempt {attempt} of {retry.max_attempts} failed (exit {result.returncode}); "
            f"attempt {attempt + 1} resumes from the latest checkpoint in {retry.backoff_seconds} s")
        sleep(retry.backoff_seconds)
        attempt += 1


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")
"""The control devices of the NVIDIA and ROCm drivers: torch's CUDA (or HIP) runtime finds no GPU without one."""


def gpus_available(device_files: tuple[str, ...] = GPU_DEVICE_FILES) -> int:
    """The GPUs torch would train on. On a Linux machine without a GPU driver it is 0 without importing
    torch: that import costs every `ftctl run` about 3 s of CPU before anything else happens."""
    if sys.platform.startswith("linux") and not any(Path(f).exists() for f in device_files):
        return 0
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


PLAIN_LINES_PER_PHASE = 10
"""Plain (CI) output: a training phase prints about this many step lines; every step is in its log."""


def plain_line_due(last: int, step: int, total: int) -> bool:
    """Whether `step` crosses the next tenth of the run (or ends it) since the last printed step."""
    if step == last:
        return False
    if not total or last < 0 or step >= total:
        return True
    return step * PLAIN_LINES_PER_PHASE // total > last * PLAIN_LINES_PER_PHASE // total


class Ui:
    """Progress bars on a terminal, plain lines elsewhere (CI logs)."""

    def __init__(self, console: Console, plain: bool) -> None:
        self.console = console
        self.plain = plain or not console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=self.plain,
        )
        self._last_step = -1
        self._latest: dict[Any, ProgressEvent] = {}  # per phase: the last figures (an evaluation step has no loss)

    def __enter__(self) -> Ui:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def phase(self, name: str, log: Path) -> Any:
        self._last_step = -1
        if self.plain:
            self.console.print(f"{name}: running (log: {log})", soft_wrap=True)
        return self.progress.add_task(name, total=None, info="")

    def event(self, task: Any, event: ProgressEvent) -> None:
        if task in self._latest:
            event = self._latest[task].updated_by(event)
        self._latest[task] = event
        step = event.step
        info = " ".join(training_figures(event.loss, event.eval_loss, event.tokens_per_second))
        total = event.total_steps
        self.progress.update(task, completed=step, total=total or None, info=info)
        if self.plain and plain_line_due(self._last_step, step, total):
            self._last_step = step
            eta = f" ETA {event.eta_seconds}s" if event.eta_seconds and step < total else ""
            self.console.print(f"  {event.unit} {step}/{total} {info}{eta}".rstrip())

    def done(self, task: Any, ok: bool, text: str) -> None:
        shown = self.progress.tasks[task]
        if shown.total:  # a phase that counted steps keeps its last step and figures on its line
            self.progress.update(task, info=f"{shown.fields.get('info', '')} {text}".strip())
        else:
            self.progress.update(task, total=1, completed=1, info=text)
        self.progress.stop_task(task)
        if self.plain:
            self.console.print(f"{'ok' if ok else 'FAILED'}: {self.progress.tasks[task].description}: {text}")


def _bootstrap_model(job: FineTuneJob, config: ResolvedConfig, console: Console) -> None:
    """Build the tiny model the annotation names (`tiny-chat` or a zoo model) at `spec.model.uri` when missing."""
    name = (job.metadata.annotations or {}).get(BOOTSTRAP_ANNOTATION)
    if name is None:
        return
    from finetune_trainer.tiny_model import build_model, is_built
    from finetune_trainer.zoo import recipe

    try:
        chosen = recipe(name)
    except ValueError as exc:
        raise PhaseFailed("bootstrap", EXIT_USER, f"metadata.annotations[{BOOTSTRAP_ANNOTATION}]: {exc}") from None
    path = Path(config.paths.model)
    if not is_built(path, chosen):
        console.print(f"building the tiny model {name} offline at {path} (about 30 s)")
        build_model(chosen, path)


def run_job(
    manifest: Path,
    workdir: Path | None = None,
    fresh: bool = False,
    serve: ServeMode = "answer",
    processes: int = 2,
    plain: bool = False,
    console: Console | None = None,
) -> int:
    """Run the pipeline; returns the exit code. The work directory is locked for the whole run."""
    console = console or Console()
    try:
        job = load_job(manifest)
    except ValueError as exc:
        console.print(f"[red]invalid manifest[/red]\n{exc}")
        return EXIT_USER
    workdir = (workdir or Path("runs") / job.metadata.name).resolve()
    try:
        with WorkdirLock(workdir):
            return _locked_run(job, manifest, workdir, fresh, serve, processes, plain, console)
    except WorkdirBusy as busy:
        console.print(str(busy), style="red", markup=False, soft_wrap=True)
        return EXIT_USER


def _clear(workdir: Path) -> None:
    """`--fresh`: everything in the work directory goes, except the lock this run holds."""
    for entry in workdir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _locked_run(
    job: FineTuneJob, manifest: Path, workdir: Path, fresh: bool, serve: ServeMode, processes: int, plain: bool,
    console: Console,
) -> int:
    state = RunState()
    notes = inapplicable_fields(job, gpus_available())
    config = local_config(job, manifest, workdir)
    layout = ArtifactLayout(config.paths.output)
    code = EXIT_INFRA
    last_line = ""
    try:
        if fresh:
            _clear(workdir)
        for note in notes:
            console.print(f"[yellow]not applied locally:[/yellow] {note}")
        config_path = workdir / "config.json"
        config_path.write_text(config.model_dump_json(by_alias=True, exclude_none=True, indent=2))
        _bootstrap_model(job, config, console)
        with Ui(console, plain) as ui:
            code = _pipeline(job, config, config_path, layout, workdir, processes, serve, ui, state)
    except PhaseFailed as failed:
        state.failed = failed.phase
        code, last_line = failed.exit_code, str(failed)
    except DiskFull as disk_full:
        state.failed = state.current
        code, last_line = EXIT_INFRA, str(disk_full)
    except OSError as exc:  # ftctl's own writes (config, logs, records) into the work directory
        state.failed = state.current
        if exc.errno == errno.ENOSPC:
            phase = state.current or "ftctl"
            last_line = str(DiskFull(workdir, phase, estimated_bytes(phase, config), free_bytes(workdir)))
        else:
            last_line = f"{state.current or 'ftctl'}: {exc}"
        code = EXIT_INFRA
    except StopRequested as stop:
        state.stopped_by = str(stop)
        code, last_line = stop.exit_code, _stopped_line(state, layout, stop)
    if config.source_cache:
        SourceCache(Path(config.source_cache)).release(holder_name(config))
    try:
        report = write_report(
            workdir, job.metadata.name, verdict(state), state.data, state.evaluation, state.phases, state.endpoint,
            state.answer, notes, layout.progress_log,
        )
        _final_table(console, state, report)
    except OSError as exc:  # a full disk (or a stop) must not hide the line that says what happened
        console.print(f"report not written: {exc}", markup=False, soft_wrap=True)
    except StopRequested:
        pass
    if last_line:
        console.print(last_line, style=None if state.stopped_by else "red", markup=False, soft_wrap=True)
    return code


def _stopped_line(state: RunState, layout: ArtifactLayout, stop: StopRequested) -> str:
    """`stopped during train at step 40/150; run the same command to resume`."""
    where = state.current or "start-up"
    if state.current and state.current.startswith("train"):
        checkpoint = latest_checkpoint(layout.checkpoints)
        logged = read_progress(layout.progress_log)  # this run's and earlier runs' steps
        last = state.progress or ((logged[-1].step, logged[-1].total_steps) if logged else None)
        step = checkpoint_step(checkpoint) if checkpoint else (last[0] if last else None)
        total = last[1] if last else None
        if step is not None:
            where += f" at step {step}/{total or '?'}"
    how = "run the same command to serve again" if state.current == "serve" else "run the same command to resume"
    return f"stopped by {stop} during {where}; {how} (finished phases are kept; --fresh starts over)"


def _pipeline(
    job: FineTuneJob,
    config: ResolvedConfig,
    config_path: Path,
    layout: ArtifactLayout,
    workdir: Path,
    processes: int,
    serve: ServeMode,
    ui: Ui,
    state: RunState,
) -> int:
    def on_event(task: Any, event: ProgressEvent) -> None:
        state.progress = (event.step, event.total_steps)
        ui.event(task, event)

    def attempt(name: str, argv: list[str], env: dict[str, str] | None = None) -> PhaseResult:
        state.current, state.progress = name, None
        check_free_space(workdir, name, config)
        task = ui.phase(name, phase_log(workdir, name))
        result = run_phase_process(name, argv, workdir, on_event=lambda e: on_event(task, e), extra_env=env)
        ok = result.returncode == 0
        text = "done" if ok else f"exit {result.returncode}"
        state.phases.append((name, result.seconds, text))
        ui.done(task, ok, text)
        return result

    def checked(name: str, result: PhaseResult) -> str:
        """The phase's termination message when it succeeded; PhaseFailed (one line: why, and the
        log) otherwise."""
        if result.returncode == 0:
            records.record(name, result.message)
            return result.message
        if result.disk_full:
            raise DiskFull(workdir, name, estimated_bytes(name, config), free_bytes(workdir))
        raise PhaseFailed(name, phase_exit_code(result.returncode), result.reason, result.log_path)

    def phase(name: str, run: Callable[[], PhaseResult]) -> str:
        """Reuse a finished phase whose outputs check out; otherwise run it (and every later phase)."""
        summary = records.finished(name)
        if summary is not None:
            state.current = name
            state.phases.append((name, 0.0, "done earlier (outputs verified)"))
            ui.console.print(f"{name}: done earlier, outputs verified; skipped")
            return summary
        records.forget_from(name)
        return checked(name, run())

    config = _fetch(config, config_path, layout, attempt)
    records = PhaseRecords(workdir, config)
    prepared = phase("prepare", lambda: attempt("prepare", trainer_argv("prepare", config_path)))
    state.data = (PrepareSummary.parse(prepared) or PrepareSummary()).data

    if config.spec.evaluation.enabled and config.spec.evaluation.compare_to_base:
        baseline = phase("baseline", lambda: attempt("baseline", trainer_argv("evaluate", config_path, "--baseline")))
        scores = (EvaluateSummary.parse(baseline) or EvaluateSummary()).baseline
        ui.console.print("base model: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))

    phase("train", lambda: train_with_retries(
        config.spec.retry,
        # each attempt gets a fresh rendezvous port: the crashed attempt's may still be held
        lambda n: attempt("train" if n == 1 else f"train (attempt {n})", *train_launch(config, config_path, processes, n - 1)),
        lambda text: ui.console.print(f"[yellow]{text}[/yellow]"),
    ))

    if merges_before_eval(job):  # as the operator's evaluation Job does: a full model needs no merge
        phase("merge", lambda: attempt("merge", trainer_argv("merge", config_path)))

    if config.spec.evaluation.enabled:
        evaluated = EvaluateSummary.parse(phase("evaluate", lambda: attempt("evaluate", trainer_argv("evaluate", config_path))))
        state.evaluation = _full_eval_report(layout) or (evaluated.to_wire() if evaluated is not None else {})
        if not state.evaluation.get("passed"):
            return EXIT_REJECTED
    else:
        state.unevaluated = True
        ui.console.print("evaluate: skipped (spec.evaluation.enabled is false)")

    if parse_source(config.spec.output.uri or "").scheme == "s3":
        _upload(config_path, attempt, ui)

    if serve != "off" and config.spec.serving.enabled:
        return _serve_and_ask(config, layout, ui, state, keep=serve == "keep")
    return EXIT_PASSED


def _upload(config_path: Path, attempt: Callable[[str, list[str]], PhaseResult], ui: Ui) -> None:
    """Upload the final artifacts to the `s3://` output (after the gates passed, or after training when
    evaluation is disabled). Run every time: the keys are fixed, so a repeat overwrites the same objects.
    Credentials: the `AWS_*` environment of `ftctl run`."""
    result = attempt("upload", trainer_argv("upload", config_path))
    if result.returncode != 0:
        raise PhaseFailed("upload", phase_exit_code(result.returncode), result.reason, result.log_path)
    summary = UploadSummary.parse(result.message)
    if summary is not None and summary.message:
        ui.console.print(f"upload: {summary.message}", markup=False, soft_wrap=True)


def _fetch(
    config: ResolvedConfig, config_path: Path, layout: ArtifactLayout, attempt: Callable[[str, list[str]], PhaseResult],
) -> ResolvedConfig:
    """Run the fetch step (always: on a warm cache it only resolves identities) and rewrite the config
    so that every later phase reads the fetched copies."""
    result = attempt("fetch", trainer_argv("fetch", config_path))
    if result.returncode != 0:
        raise PhaseFailed("fetch", phase_exit_code(result.returncode), result.reason, result.log_path)
    fetched = FetchSummary.model_validate_json(layout.sources_json.read_text())
    config = config.with_fetched(fetched)
    config_path.write_text(config.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    return config


def _full_eval_report(layout: ArtifactLayout) -> dict[str, Any]:
    """The aggregates of eval/report.json (the termination message may be truncated)."""
    if not layout.eval_report.exists():
        return {}
    report = json.loads(layout.eval_report.read_text())
    return {k: report[k] for k in ("passed", "score", "metrics", "gates", "items") if k in report}


def _first_eval_prompt(config: ResolvedConfig) -> list[dict[str, Any]]:
    """The first held-out prompt, read as evaluation reads it (any file format, the column mapping);
    the first training prompt when there is no held-out set."""
    from finetune_trainer.evaluation.items import EvalDataError, held_out_items, read_items

    try:
        items, _ = held_out_items(config)
    except EvalDataError:
        items = read_items(config.paths.train, config.spec.datasets.train)
    return items[0].prompt


def _serve_and_ask(config: ResolvedConfig, layout: ArtifactLayout, ui: Ui, state: RunState, keep: bool) -> int:
    """Serve the result and ask it the first held-out prompt; with `keep`, go on serving until a stop
    signal (the run then ends as `ftctl serve` does, 128 + the signal)."""
    from finetune_trainer.serving.local import serve_local_run, vllm_log

    state.current, state.progress = "serve", None
    task = ui.phase("serve", vllm_log(layout))
    messages = _first_eval_prompt(config)

    def answered(endpoint: str, answer: str, seconds: float) -> None:
        if state.served:
            return
        state.endpoint, state.answer, state.served = endpoint, answer, True
        state.phases.append(("serve", seconds, "answered"))
        ui.done(task, True, f"{config.served_model_name} answered {answer!r}")

    def keep_serving(endpoint: str, answer: str, seconds: float) -> None:
        answered(endpoint, answer, seconds)
        ui.console.print(f"serving {config.served_model_name} at {endpoint}; Ctrl-C stops the server", soft_wrap=True)

    try:
        answered(*serve_local_run(config, layout, messages, on_answer=keep_serving if keep else None))
    except RuntimeError as exc:
        if state.served is None:
            ui.done(task, False, "failed")
            state.phases.append(("serve", 0.0, "failed"))
        state.served = False
        raise PhaseFailed("serving", EXIT_INFRA, " ".join(str(exc).split())) from None
    return EXIT_PASSED


def _final_table(console: Console, state: RunState, report: Path) -> None:
    table = Table(title="Base vs tuned on the held-out set")
    for column in ("metric", "base", "tuned", "delta", "P(tuned > base)"):
        table.add_column(column)
    for m in state.evaluation.get("metrics", []):
        table.add_row(
            str(m.get("name")),
            *[f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "–" for k in ("base", "tuned", "delta", "pBetter")],
        )
    if table.row_count:
        console.print(table)
    for g in state.evaluation.get("gates", []):
        mark = "[green]PASS[/green]" if g.get("passed") else "[red]FAIL[/red]"
        console.print(f"{mark} {g.get('message') or g.get('metric')}")
    data = state.data
    if data is not None:
        console.print(
            f"data: {data.train_examples} train / {data.eval_examples} eval examples, "
            f"{data.train_tokens} train tokens, dropped {data.dropped}"
        )
    if state.endpoint:
        console.print(f"served at {state.endpoint}; answer: {state.answer!r}")
    console.print(f"verdict: {verdict(state)}")
    console.print(f"report: {report}")


def run_from_cli(args: argparse.Namespace) -> int:
    return run_job(
        Path(args.file),
        workdir=Path(args.workdir) if args.workdir else None,
        fresh=args.fresh,
        serve="off" if args.no_serve else "keep" if args.keep_serving else "answer",
        processes=args.processes,
        plain=args.plain,
    )

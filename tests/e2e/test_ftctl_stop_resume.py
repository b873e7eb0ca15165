"""`ftctl run` and `ftctl serve` behave like well-made command-line tools (issue 21, issue 14 item 7).

Real processes throughout: `ftctl` as a subprocess, the trainer's phases, two training processes under
the launcher, a real vLLM CPU server. After every stop the test walks /proc for anything left: the
descendants seen just before the signal, and every process carrying this test's marker in its
environment (which a re-parented orphan keeps).

Cost control: one uninterrupted run (the reference) and one run stopped in every phase in turn —
prepare, baseline, train three times (SIGINT, SIGTERM, SIGHUP at increasing steps), evaluate — then
resumed to the end, compared with the reference. Serving tests reuse the reference's work directory,
where every phase is finished, so `ftctl run` goes straight to serving. A vLLM start is the dearest
step here, so each live server takes one signal and the three signals are spread over them: SIGINT and
SIGHUP stop `ftctl run`'s server (the second run also proves a stopped serve phase serves again),
SIGTERM stops `ftctl serve`'s — every command turns the three into the same stop (`finetune_cli.main`).
A run that serves, answers and stops by itself leaves nothing behind either: every zoo cell
(`test_zoo.py`) checks that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from finetune_api.contract.launch import free_port
from finetune_cli.local.lock import WorkdirLock
from finetune_cli.local.report import read_progress
from finetune_trainer.tiny_model import build_tiny_model, is_built
from tests.harness.processes import (
    MARKER_ENV,
    cmdline,
    descendants,
    kill_all,
    listening,
    marked,
    port_free,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
PREBUILT_MODEL = Path(os.environ.get("FT_CACHE_DIR", REPO / ".cache")) / "models" / "tiny-chat"
LOSS_TOLERANCE = 0.05


@dataclass
class Finished:
    code: int
    output: str

    @property
    def last_line(self) -> str:
        return self.output.strip().splitlines()[-1]


class Ftctl:
    """One `ftctl` process with a marker in its environment; its output goes to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.marker = uuid.uuid4().hex
        self.log = log
        self.started = time.monotonic()
        environ = {**os.environ, MARKER_ENV: self.marker, **(env or {})}
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "finetune_cli.main", *args], stdout=out, stderr=subprocess.STDOUT,
                env=environ, cwd=REPO,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"ftctl exited {self.proc.returncode} before {what}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} after {timeout:.0f} s:\n{self.output()[-4000:]}")
            time.sleep(0.3)

    def wait_for_text(self, text: str, timeout: float = 600) -> None:
        self.wait_for(lambda: text in self.output(), repr(text), timeout)

    def finish(self, timeout: float = 1200) -> Finished:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"ftctl did not finish in {timeout:.0f} s:\n{self.output()[-4000:]}")
        left = wait_until_gone(set(), self.marker, timeout=30)
        assert not left, f"left running after ftctl exited: {[cmdline(p) for p in left]}"
        return Finished(code, self.output())

    def stop(self, signum: int) -> Finished:
        """Send `signum`; then nothing that was running below ftctl may remain."""
        before = descendants(self.proc.pid)
        assert before, "ftctl had no child process to stop"
        os.kill(self.proc.pid, signum)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"ftctl did not exit within 120 s of {signal.Signals(signum).name}:\n{self.output()[-4000:]}")
        left = wait_until_gone(before, self.marker, timeout=30)
        if left:
            kill_all(left)
        assert not left, f"left running after {signal.Signals(signum).name}: {[cmdline(p) for p in left]}"
        return Finished(code, self.output())

    def kill(self) -> None:
        kill_all({self.proc.pid, *descendants(self.proc.pid), *marked(self.marker)})
        self.proc.wait()


def write_manifest(directory: Path, name: str, model: Path, epochs: int = 2) -> Path:
    """The quickstart with absolute paths, a shorter training (2 epochs, 50 steps: exact match ≈ 0.4, far
    from saturated, so a resume that changed anything would show in the numbers) and a gate it passes."""
    manifest = yaml.safe_load(QUICKSTART.read_text())
    spec = manifest["spec"]
    manifest["metadata"]["name"] = name
    spec["model"]["uri"] = str(model)
    for split in ("train", "validation", "eval"):
        spec["datasets"][split]["uri"] = str((QUICKSTART.parent / spec["datasets"][split]["uri"]).resolve())
    spec["hyperparameters"]["epochs"] = epochs
    spec["evaluation"]["gates"] = [{"metric": "exact_match", "min": 0.25}]
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def run_args(manifest: Path, workdir: Path, *flags: str) -> list[str]:
    return ["run", str(manifest), "--workdir", str(workdir), "--plain", *flags]


def data_report(workdir: Path) -> dict:
    report = json.loads((workdir / "artifacts" / "data" / "report.json").read_text())
    return {k: v for k, v in report.items() if k not in ("timings_seconds", "prepared")}  # when and where, not what


def eval_numbers(workdir: Path) -> list[dict]:
    return json.loads((workdir / "artifacts" / "eval" / "report.json").read_text())["metrics"]


def final_loss(workdir: Path) -> float:
    events = [e for e in read_progress(workdir / "artifacts" / "progress.jsonl") if e.loss is not None]
    last = max(events, key=lambda e: e.step)
    assert last.step == last.total_steps, last
    return float(last.loss or 0.0)


def max_step(workdir: Path) -> int:
    return max((e.step for e in read_progress(workdir / "artifacts" / "progress.jsonl")), default=0)


def skipped(output: str) -> list[str]:
    return re.findall(r"^(\w+): done earlier, outputs verified; skipped$", output, re.MULTILINE)


def vllm_port(workdir: Path) -> int:
    command = [line for line in (workdir / "artifacts" / "logs" / "vllm.log").read_text().splitlines() if line.startswith("$ ")][-1]
    return int(command.split("--port", 1)[1].split()[0].strip("="))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy of the tiny chat model (one test changes its config for a while)."""
    copy = tmp_path_factory.mktemp("models") / "tiny-chat"
    if is_built(PREBUILT_MODEL):
        shutil.copytree(PREBUILT_MODEL, copy)
        return copy
    return build_tiny_model(copy)


@pytest.fixture(scope="module")
def manifest(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("manifests"), "stop-resume", model)


@pytest.fixture(scope="module")
def reference(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `--no-serve` run: passes its gate, and nothing is served."""
    workdir = tmp_path_factory.mktemp("reference") / "work"
    done = Ftctl(run_args(manifest, workdir, "--no-serve"), workdir.parent / "ftctl.log").finish()
    assert done.code == 0, done.output[-4000:]
    assert "verdict: PASSED" in done.output
    assert "serve" not in (workdir / "report.md").read_text().split("## Data")[0]
    assert not (workdir / "artifacts" / "logs" / "vllm.log").exists()
    return workdir


def test_a_run_stopped_in_every_phase_resumes_to_the_reference_result(manifest: Path, reference: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    log = iter(tmp_path / f"ftctl-{i}.log" for i in range(20))

    def stop_in(phase: str, signum: int, ready: Callable[[Ftctl], None], finished_before: list[str]) -> str:
        run = Ftctl(run_args(manifest, workdir, "--no-serve"), next(log))
        ready(run)
        done = run.stop(signum)
        name = signal.Signals(signum).name
        assert done.code == 128 + signum, done.output[-3000:]
        assert done.last_line.startswith(f"stopped by {name} during {phase}"), done.last_line
        assert "run the same command to resume" in done.last_line
        assert "Traceback" not in done.output
        assert skipped(done.output) == finished_before, done.output[-3000:]
        return done.last_line

    def running(phase: str) -> Callable[[Ftctl], None]:
        def ready(run: Ftctl) -> None:
            run.wait_for_text(f"{phase}: running")
            run.wait_for(lambda: bool(descendants(run.proc.pid)), f"the {phase} process")
        return ready

    def at_step(step: int) -> Callable[[Ftctl], None]:
        return lambda run: run.wait_for(lambda: max_step(workdir) >= step, f"training step {step}")

    # the last argument: the phases a run skips, those finished by an earlier run
    stop_in("prepare", signal.SIGINT, running("prepare"), [])
    stop_in("baseline", signal.SIGTERM, running("baseline"), [])  # prepare runs again: it was stopped
    line = stop_in("train", signal.SIGINT, at_step(8), ["prepare"])
    assert re.search(r"during train at step \d+/50;", line), line
    stop_in("train", signal.SIGTERM, at_step(max_step(workdir) + 8), ["prepare", "baseline"])
    stop_in("train", signal.SIGHUP, at_step(max_step(workdir) + 8), ["prepare", "baseline"])
    stop_in("evaluate", signal.SIGHUP, running("evaluate"), ["prepare", "baseline"])  # train finished first

    done = Ftctl(run_args(manifest, workdir, "--no-serve"), next(log)).finish()
    assert done.code == 0, done.output[-4000:]
    assert skipped(done.output) == ["prepare", "baseline", "train"]
    assert "verdict: PASSED" in done.output
    assert data_report(workdir) == data_report(reference)
    assert eval_numbers(workdir) == eval_numbers(reference)
    assert abs(final_loss(workdir) - final_loss(reference)) <= LOSS_TOLERANCE, (final_loss(workdir), final_loss(reference))
    checkpoints = sorted(p.name for p in (workdir / "artifacts" / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert len(checkpoints) >= 2, checkpoints  # the stops saved checkpoints that the resumes started from

    again = Ftctl(run_args(manifest, workdir, "--no-serve"), next(log)).finish()
    assert again.code == 0 and skipped(again.output) == ["prepare", "baseline", "train", "evaluate"], again.output[-3000:]


def test_a_corrupt_or_missing_output_runs_its_phase_again(manifest: Path, reference: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(reference, workdir)
    expected = eval_numbers(workdir)
    report = workdir / "artifacts" / "eval" / "report.json"
    report.write_text(report.read_text()[:100])  # cut short: no longer the recorded digest (nor valid JSON)
    done = Ftctl(run_args(manifest, workdir, "--no-serve"), tmp_path / "corrupt.log").finish()
    assert done.code == 0, done.output[-4000:]
    assert skipped(done.output) == ["prepare", "baseline", "train"]
    assert "evaluate: running" in done.output
    assert eval_numbers(workdir) == expected

    (workdir / "artifacts" / "eval" / "base-outputs.json").unlink()
    done = Ftctl(run_args(manifest, workdir, "--no-serve"), tmp_path / "missing.log").finish()
    assert done.code == 0, done.output[-4000:]
    assert skipped(done.output) == ["prepare"]  # baseline runs again, and every phase after it
    assert "baseline: running" in done.output and "train: running" in done.output
    assert eval_numbers(workdir) == expected


def test_fresh_starts_over(manifest: Path, reference: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(reference, workdir)
    run = Ftctl(run_args(manifest, workdir, "--no-serve", "--fresh"), tmp_path / "fresh.log")
    run.wait_for_text("prepare: running")
    run.wait_for(lambda: bool(descendants(run.proc.pid)), "the prepare process")
    assert not (workdir / "artifacts" / "checkpoints").exists()
    assert not (workdir / "artifacts" / "eval").exists()
    assert not (workdir / "phases").exists() or not any((workdir / "phases").iterdir())
    done = run.stop(signal.SIGTERM)
    assert done.code == 143 and skipped(done.output) == []


def test_a_second_run_on_a_locked_workdir_is_refused_with_the_holders_pid(manifest: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    with WorkdirLock(workdir):  # held by this process, as a running `ftctl run` holds it
        done = Ftctl(run_args(manifest, workdir), tmp_path / "second.log").finish(timeout=120)
    assert done.code == 1
    assert done.output.strip() == (f"{workdir} is in use by another ftctl run (pid {os.getpid()}); "
                                   "wait for it or pass another --workdir"), done.output
    assert not (workdir / "config.json").exists()  # the refused run wrote nothing


def test_a_signal_while_serving_stops_the_server_and_the_same_command_serves_again(manifest: Path, reference: Path, tmp_path: Path) -> None:
    """`--keep-serving` holds the endpoint after the smoke answer, so the signal lands on a server known
    to be up (without it the run stops its server by itself a moment after the answer). The first run
    is stopped with SIGINT (Ctrl-C); the same command then serves again and is stopped with SIGHUP."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        name = signal.Signals(signum).name
        run = Ftctl(run_args(manifest, reference, "--keep-serving"), tmp_path / f"serve-{name}.log")
        run.wait_for_text("Ctrl-C stops the server")
        port = vllm_port(reference)
        assert listening(port) and len(descendants(run.proc.pid)) >= 2, run.output()[-3000:]
        assert re.search(rf"^serving stop-resume at http://127\.0\.0\.1:{port}/v1; Ctrl-C stops the server$", run.output(), re.MULTILINE)
        done = run.stop(signum)
        assert done.code == 128 + signum, done.output[-3000:]
        assert done.last_line.startswith(f"stopped by {name} during serve; run the same command to serve again")
        assert skipped(done.output) == ["prepare", "baseline", "train", "evaluate"]
        assert f"served at http://127.0.0.1:{port}/v1; answer: " in done.output  # the report keeps the answer
        assert "verdict: PASSED" in done.output
        assert (reference / "report.md").read_text().startswith("# FineTuneJob `stop-resume` — PASSED")
        assert port_free(port), f"port {port} still taken"


def test_ftctl_serve_stops_its_server_on_a_signal(reference: Path, tmp_path: Path) -> None:
    """SIGTERM, what `timeout`, systemd and container runtimes send (SIGINT and SIGHUP: the test above)."""
    port = free_port()
    run = Ftctl(["serve", str(reference / "artifacts"), "--port", str(port)], tmp_path / "serve.log")
    run.wait_for(lambda: listening(port) and len(descendants(run.proc.pid)) >= 2, "the vLLM server listening, with its engine")
    done = run.stop(signal.SIGTERM)
    assert done.code == 128 + signal.SIGTERM, done.output[-3000:]
    assert done.last_line == f"stopped by SIGTERM; the server on port {port} is stopped"
    assert port_free(port)


def test_sigkill_of_ftctl_serve_leaves_no_server(reference: Path, tmp_path: Path) -> None:
    port = free_port()
    run = Ftctl(["serve", str(reference / "artifacts"), "--port", str(port)], tmp_path / "serve.log")
    run.wait_for_text("Ctrl-C stops the server.")
    server = descendants(run.proc.pid)
    assert any("vllm" in cmdline(p) for p in server), [cmdline(p) for p in server]
    os.kill(run.proc.pid, signal.SIGKILL)  # no handler runs: only the kernel's parent-death signal is left
    run.proc.wait()
    left = wait_until_gone(server, run.marker, timeout=60)
    if left:
        kill_all(left)
    assert not left, f"left running after SIGKILL of ftctl serve: {[cmdline(p) for p in left]}"
    assert port_free(port)


def test_a_failed_server_is_one_line_and_not_passed(model: Path, manifest: Path, reference: Path, tmp_path: Path) -> None:
    """Issue 14's case: a serving length beyond the base model's positions. Here the model's config
    changed after the gates passed (the Validating phase refuses it when it is known in time); vLLM
    refuses to start, and `ftctl` says why in one line with the log, and the verdict is not PASSED."""
    workdir = tmp_path / "work"
    shutil.copytree(reference, workdir)
    config_path = model / "config.json"
    original = config_path.read_text()
    config_path.write_text(json.dumps({**json.loads(original), "max_position_embeddings": 128}))
    try:
        done = Ftctl(run_args(manifest, workdir), tmp_path / "run.log").finish()
        served = Ftctl(["serve", str(workdir / "artifacts")], tmp_path / "serve.log").finish()
    finally:
        config_path.write_text(original)
    expected = "the base model supports 128 positions; spec.serving.maxModelLen is 256"
    log = workdir / "artifacts" / "logs" / "vllm.log"
    assert done.code == 2, done.output[-4000:]
    assert "Traceback" not in done.output
    assert skipped(done.output) == ["prepare", "baseline", "train", "evaluate"]
    assert done.last_line == f"serving: {expected} (log: {log})"
    assert "verdict: PASSED gates, SERVING FAILED" in done.output
    assert (workdir / "report.md").read_text().startswith("# FineTuneJob `stop-resume` — PASSED gates, SERVING FAILED")

    assert served.code == 2 and "Traceback" not in served.output, served.output[-3000:]
    assert served.last_line == f"serving failed: {expected} (log: {log})"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: room for the prepared data, not for training's checkpoints."""
    mount = tmp_path / "small"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=False, capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {tried.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_directory_and_a_later_run_resumes(manifest: Path, reference: Path, small_tmpfs: Path, tmp_path: Path) -> None:
    workdir = small_tmpfs / "work"
    checked = Ftctl(run_args(manifest, workdir, "--no-serve"), tmp_path / "checked.log").finish()
    assert checked.code == 2, checked.output[-4000:]
    assert re.match(rf"disk full: {re.escape(str(workdir))} has [\d.]+ \w+ free and train needs about [\d.]+ MiB; "
                    r"free some space and run the same command to resume$", checked.last_line), checked.last_line
    assert "train: running" not in checked.output  # refused before training started

    # with the check off, training really runs out of space (ENOSPC) and is not retried
    enospc = Ftctl(run_args(manifest, workdir, "--no-serve"), tmp_path / "enospc.log", env={"FT_MIN_FREE_BYTES": "0"}).finish()
    assert enospc.code == 2, enospc.output[-4000:]
    assert re.match(rf"disk full: {re.escape(str(workdir))} has [\d.]+ \w+ free and train needs about [\d.]+ MiB; ",
                    enospc.last_line), enospc.last_line
    assert "attempt 2" not in enospc.output and "Traceback" not in enospc.output
    assert skipped(enospc.output) == ["prepare", "baseline"]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    done = Ftctl(run_args(manifest, workdir, "--no-serve"), tmp_path / "resumed.log").finish()
    assert done.code == 0, done.output[-4000:]
    assert skipped(done.output) == ["prepare", "baseline"]
    assert eval_numbers(workdir) == eval_numbers(reference)

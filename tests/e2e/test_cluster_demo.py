"""The whole promise on the test control plane, as the README's cluster section runs it: `make cluster-demo`
(`python -m tests.harness.demo`) starts the control plane, the local pod runner and the operator with the
chart's ServiceAccount and values; the commands it prints, run as printed, take
`examples/cluster-quickstart.yaml` through Validating → Training → Evaluating → Deploying → Serving and
chat with the served adapter; Ctrl-C then leaves no process behind.

Every pod the operator creates (prepare Job, 2-process torchrun training Job, evaluation Job, vLLM
Deployment) runs for real on the local pod runner: the real trainer on the tiny model and a real vLLM CPU
server. During training the operator reads the trainer's progress through `pods/log` (the runner serves
the kubelet's log endpoint), so `status.progress` and `kubectl get ftj` move through the steps with a loss.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from finetune_api.contract.progress import latest_progress
from finetune_trainer.tiny_model import LABELS
from tests.harness.cluster import Cluster
from tests.harness.operator import status, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"Serving", "Succeeded", "Failed", "Rejected"}
JOB = "quickstart"


class Demo:
    """`python -m tests.harness.demo` in its own process group (a terminal's foreground job), its output read."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.harness.demo", "--work-dir", str(work)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, prefix: str) -> str:
        """The first printed line that starts with `prefix` (stripped), once it is printed."""
        def line() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited {self.proc.returncode}:\n{self.output()}")
            return next((ln.strip() for ln in self.lines if ln.strip().startswith(prefix)), None)

        return wait_for(f"the demo to print {prefix!r}", line, timeout=600, interval=0.5)

    def output(self) -> str:
        logs = self.work / "cluster" / "data" / "logs" / "operator.log"
        tail = "\n".join(logs.read_text(errors="replace").splitlines()[-40:]) if logs.exists() else ""
        return "\n".join(self.lines[-60:]) + f"\n--- operator log (tail)\n{tail}"

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the foreground process group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)


def run_printed(line: str, kubeconfig: str) -> str:
    """Run one command exactly as the demo printed it."""
    out = subprocess.run(shlex.split(line, comments=True), capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KUBECONFIG": kubeconfig}, check=True)
    return out.stdout


def test_cluster_demo_takes_the_example_to_serving_and_ctrl_c_leaves_nothing(tmp_path):
    demo = Demo(tmp_path / "demo")
    processes: list[psutil.Process] = []
    try:
        kubeconfig = demo.printed("export KUBECONFIG=").split("=", 1)[1]
        cluster = Cluster(kubeconfig, tmp_path / "logs", external=True)
        run_printed(demo.printed("kubectl apply -f"), kubeconfig)
        seen: list[str] = []
        training: list[dict] = []  # status.progress while Training, as read
        table: list[str] = []  # `kubectl get ftj` rows while Training

        def settled() -> dict | None:
            current = status(cluster, "default", JOB)
            if current.get("phase") and (not seen or seen[-1] != current["phase"]):
                seen.append(current["phase"])
            if current.get("phase") == "Training" and current.get("progress"):
                training.append(current["progress"])
                table.append(cluster.kubectl("get", "ftj", JOB, "--no-headers").stdout)
            return current if current.get("phase") in TERMINAL else None

        final = wait_for("the job to settle", settled, timeout=1500, interval=2)
        assert final["phase"] == "Serving", f"phases {seen}; status {json.dumps(final, indent=1)[:3000]}\n{demo.output()}"
        assert {"Validating", "Training", "Evaluating"} <= set(seen), seen

        assert final["data"]["trainExamples"] == 400
        assert final["evaluation"]["passed"] is True
        exact = next(m for m in final["evaluation"]["metrics"] if m["name"] == "exact_match")
        assert exact["tuned"] >= 0.8 and exact["base"] <= 0.3, exact
        assert final["progress"]["step"] == final["progress"]["totalSteps"] > 0
        assert final["progress"].get("loss") is not None  # the train summary's final loss
        # mid-training progress, read from the rank-0 pod's log through the apiserver (kubelet log endpoint)
        midway = [p for p in training if 0 < p.get("step", 0) < p.get("totalSteps", 0)]
        steps = [p["step"] for p in midway]
        assert len(set(steps)) >= 2 and steps == sorted(steps), training
        assert all(p.get("loss") is not None for p in midway), training
        assert any(re.search(r"\bTraining\s+\d+/\d+ loss \d", row) for row in table), table
        assert final["artifacts"]["adapterDigest"].startswith("sha256:"), final.get("artifacts")
        serving = final["serving"]
        assert serving["readyReplicas"] >= 1 and JOB in serving["modelNames"], serving

        # the trainer's own output through `kubectl logs` (the printed command, without -f: the Job is done)
        logs = run_printed(demo.printed("kubectl logs -f").replace(" -f ", " "), kubeconfig)
        last = latest_progress(logs.splitlines())
        assert last is not None and last.step == last.total_steps == final["progress"]["totalSteps"], logs[-2000:]

        # ftctl against the cluster, with the kubeconfig as kubectl uses it
        ftctl = [sys.executable, "-m", "finetune_cli.main"]
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        shown = subprocess.run([*ftctl, "status", JOB], env=env, capture_output=True, text=True, check=True).stdout
        total = final["progress"]["totalSteps"]
        assert shown.startswith(f"default/{JOB}: Serving") and f"step {total}/{total}" in shown, shown
        assert re.search(r"exact_match\s+0\.\d{3}\s+[01]\.\d{3}", shown) and "gate exact_match: passed" in shown, shown
        assert f"serving: {serving['endpoint']}" in shown, shown
        train_log = subprocess.run([*ftctl, "logs", JOB, "--phase", "train"], env=env, capture_output=True, text=True,
                                   check=True).stdout
        assert train_log == logs, "ftctl logs --phase train shows another pod than kubectl logs job/…-train-a0"

        # the printed chat: the address from the Service's EndpointSlice, then curl
        chat = f"{demo.printed('ADDRESS=$(')}\n{demo.printed('curl ')}"
        answer = subprocess.run(["bash", "-c", chat], capture_output=True, text=True, timeout=120, check=True,
                                env={**os.environ, "KUBECONFIG": kubeconfig})
        content = json.loads(answer.stdout)["choices"][0]["message"]["content"].strip()
        assert content == "billing", f"the served adapter answered {content!r} (labels: {sorted(LABELS)})"

        processes = psutil.Process(demo.proc.pid).children(recursive=True)
        assert any("vllm" in " ".join(p.cmdline()) for p in processes), "no vLLM server among the demo's processes"
        demo.interrupt()
        assert demo.proc.wait(120) == 0, demo.output()
        left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"left running after Ctrl-C: {[' '.join(p.cmdline())[:120] for p in left]}"
        assert demo.lines[-1] == "stopped.", demo.output()
    finally:
        demo.interrupt()
        try:
            demo.proc.wait(120)
        finally:
            for p in processes or []:
                if p.is_running():
                    p.kill()

"""`kubectl logs` on a local-runner pod, through the real kube-apiserver and the runner's kubelet log
endpoint (tests/harness/podrunner/kubelet_logs.py): the current run, `--previous` after a restart,
`--tail`, `-f` until the container exits, and a clear refusal of what the runner cannot answer."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.harness.cluster import KUBECTL, wait_for

pytestmark = pytest.mark.api

# Each run counts itself in the pod's emptyDir; the first run fails (so the kubelet restarts it), the
# second waits for the test's `stop` file, then ends.
PROGRAM = textwrap.dedent("""\
    import pathlib, sys, time
    runs = pathlib.Path('/data/runs')
    n = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(n + 1))
    for i in range(5):
        print(f'run {n} line {i}', flush=True)
    if n == 0:
        sys.exit(1)
    while not pathlib.Path('/data/stop').exists():
        time.sleep(0.05)
    print(f'run {n} done', flush=True)
""")


def run_lines(run: int) -> list[str]:
    return [f"run {run} line {i}" for i in range(5)]


def test_kubectl_logs_current_previous_tail_and_follow(cluster, local_runner, namespace):
    cluster.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker", "namespace": namespace},
        "spec": {
            "restartPolicy": "OnFailure",
            "nodeSelector": local_runner.node_selector, "tolerations": local_runner.tolerations,
            "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", PROGRAM],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })

    def logs(*args: str) -> list[str]:
        return cluster.kubectl("logs", "talker", "-n", namespace, *args).stdout.splitlines()

    wait_for(lambda: logs() == run_lines(1), 90, what="the restarted container's output")
    assert logs("--previous") == run_lines(0)
    assert logs("--tail=2") == run_lines(1)[-2:]
    assert logs("--limit-bytes=10") == ["run 1 line"]

    refused = cluster.kubectl("logs", "talker", "-n", namespace, "--timestamps", check=False)
    assert refused.returncode != 0 and "timestamps is not supported" in refused.stderr, refused.stderr

    with subprocess.Popen([KUBECTL, "--kubeconfig", cluster.kubeconfig, "logs", "-f", "talker", "-n", namespace],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follow:
        assert follow.stdout is not None
        streamed = [follow.stdout.readline().rstrip("\n") for _ in range(5)]
        assert streamed == run_lines(1)
        (local_runner.pod_dir(namespace, "talker") / "volumes" / "data" / "stop").write_text("")
        rest, err = follow.communicate(timeout=60)  # the stream ends when the container exits
    assert follow.returncode == 0, err
    assert rest.splitlines() == ["run 1 done"]

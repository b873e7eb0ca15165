"""Local pod runner: a stand-in kubelet that runs pods as local processes (DESIGN.md §8, e2e tier).

It registers the Node `local-runner` (kept Ready through its Lease and status heartbeats; kwok
does not manage it), watches the pods bound to it and runs each container's command+args (an exec
list, never a shell) as a process group with the runner's Python environment first on PATH (the
repo's `.venv`: `python` in a container command is the venv's python). It writes the pod status
back like a kubelet: Pending -> Running -> Succeeded/Failed, containerStatuses (running /
terminated with exitCode, reason and the termination message), podIP (the pod's own address), Ready from the
readinessProbe (httpGet / tcpSocket / exec), restarts per restartPolicy, and on deletion runs
its containers' `preStop` sleep, then sends SIGTERM to each container's process (a runtime's PID 1) and SIGKILL to its group after terminationGracePeriodSeconds.

Scheduling: the node is tainted `finetune.dev/local-runner=true:NoSchedule` and labelled
`finetune.dev/local-runner=true`; a pod runs here only with NODE_SELECTOR and TOLERATIONS below.

Paths: each volumeMount.mountPath (and terminationMessagePath, workingDir) is mapped to a host
directory (emptyDir/configMap/secret/projected/downwardAPI -> a per-pod directory; PVC -> the PV's
hostPath or `<pvc-root>/<namespace>/<claim>`, shared by all pods of the claim; hostPath -> the same
path). Programs cannot see that mapping, so mount paths are substituted *textually* in command,
args, env values and in the text files materialised from configMap/secret volumes; a path a
program builds at run time or reads from elsewhere is not mapped (documented limitation).

Network identity (`cni`, `network`, `sandbox`): with a pod bridge (`--pod-bridge`, `--pod-cidr`; the fixture
makes one where the machine allows) each pod gets a network namespace, a veth on the bridge and an address
of its own, deleted with the pod; without one, pods share the node's network namespace and address, like
hostNetwork pods, and the runner logs why. Each container runs in its pod's own UTS and mount namespaces with
the pod's hostname and the kubelet's /etc/hosts, /etc/hostname and /etc/resolv.conf bind-mounted; names
resolve through the cluster DNS (`--cluster-dns`, CoreDNS started by the fixture: tests/harness/clusterdns.py)
and, with the bridge, ClusterIPs are routed by the runner's userspace Service proxy (`serviceproxy`)
(docs/controlplane.md).

Run: `python -m tests.harness.podrunner --kubeconfig K --work-dir D` (the `local_runner` pytest
fixture does this). Container logs: `<work-dir>/pods/<ns>_<pod>_<uid8>/<container>.log` (every run,
appended; `<container>.log.starts` holds each run's byte offset); `kubectl logs` reads them through the
runner's kubelet log endpoint (HTTPS on the node's address, port in `daemonEndpoints`).

Modules, one concern each: `node` (the Node, its Lease, scheduling constants, POD_IP), `runner` (the
watch and one worker per pod), `worker` (a pod's life), `container` (a container's state and host
paths), `processes` (spawning, signals, exits), `probes`, `env` (env, downward API, ConfigMap and Secret
data), `volumes`, `paths` (textual path mapping), `cni` (the pod bridge, pod namespaces and addresses), `network`
(hostname, /etc files, DNS policy), `serviceproxy` (kube-proxy's part: ClusterIPs to ready endpoints), `sandbox`
(the exec wrapper that enters the pod's namespaces), `status` (the pod status), `logs` (log runs, log tail
and termination message), `kubelet_logs` (the kubelet's container-log endpoint), `fixture` (the pytest
fixture's handle on the subprocess), `main` (the command).
"""

from .fixture import LocalRunnerProcess
from .main import main
from .node import NODE_NAME, NODE_SELECTOR, POD_IP, RUNNER_LABEL, TAINT, TOLERATIONS, pod_spec_for_runner
from .runner import Runner

__all__ = [
    "NODE_NAME",
    "NODE_SELECTOR",
    "POD_IP",
    "RUNNER_LABEL",
    "TAINT",
    "TOLERATIONS",
    "LocalRunnerProcess",
    "Runner",
    "main",
    "pod_spec_for_runner",
]

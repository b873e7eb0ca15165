"""`python -m tests.harness.podrunner --kubeconfig K --work-dir D`: run the runner until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from .node import NODE_NAME
from .runner import Runner

log = logging.getLogger("podrunner")


def main(argv: list[str] | None = None) -> int:
    from . import __doc__ as package_doc

    ap = argparse.ArgumentParser(prog="python -m tests.harness.podrunner", description=(package_doc or "").split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--node-name", default=NODE_NAME)
    ap.add_argument("--pvc-root", default=None)
    ap.add_argument("--venv-bin", default=os.environ.get("FT_RUNNER_VENV_BIN"))
    ap.add_argument("--delete-node-on-exit", action="store_true")
    ap.add_argument("--cluster-dns", default=None,
                    help="the cluster DNS address pods with dnsPolicy ClusterFirst resolve through (port 53)")
    ap.add_argument("--pod-bridge", default=None,
                    help="the node's pod bridge (cni.PodBridge): each pod gets a network namespace and an address on it")
    ap.add_argument("--pod-cidr", default=None, help="the pod bridge's subnet (the node's spec.podCIDR)")
    ap.add_argument("--no-pod-network-reason", default=None,
                    help="why there is no pod bridge (logged: pods then share the node's network namespace)")
    ap.add_argument("--stop-grace", type=float, default=5.0,
                    help="seconds between SIGTERM and SIGKILL for running pods when the runner stops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    from kubernetes import config

    api = config.new_client_from_config(config_file=args.kubeconfig)
    runner = Runner(api, args.work_dir, node_name=args.node_name, pvc_root=args.pvc_root, venv_bin=args.venv_bin,
                    stop_grace=args.stop_grace, cluster_dns=args.cluster_dns, pod_bridge=args.pod_bridge,
                    pod_cidr=args.pod_cidr, no_pod_network_reason=args.no_pod_network_reason)

    def _stop(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        runner.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    t = threading.Thread(target=runner.run, name="watch", daemon=True)
    t.start()
    while not runner.stopping.wait(0.5):
        if not t.is_alive():
            log.error("runner thread died")
            return 1
    runner.stop(delete_node=args.delete_node_on_exit)
    log.info("stopped")
    return 0

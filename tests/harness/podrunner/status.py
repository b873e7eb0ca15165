"""The pod status as a kubelet writes it: phase, conditions, container statuses, the pod IP."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .clock import now
from .container import Container

log = logging.getLogger("podrunner")


class StatusWriter:
    """Keeps a pod's conditions and patches its status when it changed (or when forced)."""

    def __init__(self, core: Any, namespace: str, pod_name: str, host_ip: str) -> None:
        self.core = core
        self.host_ip = host_ip
        self.pod_ip: str | None = None  # once the pod's network is set up
        self.ns = namespace
        self.pod_name = pod_name
        self.conditions: dict[str, dict] = {}
        self.start_time = now()
        self.last_sent: Any = None

    def set_condition(self, typ: str, status: bool, reason: str | None = None) -> None:
        s = "True" if status else "False"
        old = self.conditions.get(typ)
        if old and old["status"] == s:
            return
        cond = {"type": typ, "status": s, "lastTransitionTime": now(), "lastProbeTime": None}
        if reason and not status:
            cond["reason"] = reason
        self.conditions[typ] = cond

    def update_ready(self, phase: str, containers: list[Container], init_containers: list[Container],
                     current: dict[str, str], readiness_gates: list[dict]) -> None:
        """ContainersReady and Ready from the containers, the readiness gates from `current` conditions."""
        terminal = phase in ("Succeeded", "Failed")
        ready = not terminal and all(c.ready and c.running for c in containers)
        ready = ready and all(c.ready and c.running for c in init_containers if c.kind == "sidecar")
        reason = "PodCompleted" if terminal else "ContainersNotReady"
        self.set_condition("ContainersReady", ready, reason)
        gates_ok = True
        for g in readiness_gates:
            gates_ok = gates_ok and current.get(g["conditionType"]) == "True"
        self.set_condition("Ready", ready and gates_ok, reason if not ready else "ReadinessGatesNotReady")

    def send(self, phase: str, reason: str | None, message: str | None, containers: list[Container],
             init_containers: list[Container], gone: threading.Event, force: bool = False) -> None:
        """Patch the status unless it is unchanged; a 404 means the pod object is gone (sets `gone`)."""
        if gone.is_set():
            return
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": list(self.conditions.values()),
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            **({"podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}]} if self.pod_ip else {}),
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in containers],
        }
        if init_containers:
            status["initContainerStatuses"] = [c.status() for c in init_containers]
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        key = json.dumps(status, sort_keys=True)
        if key == self.last_sent and not force:
            return
        from kubernetes.client.rest import ApiException

        for attempt in range(5):
            try:
                self.core.patch_namespaced_pod_status(self.pod_name, self.ns, {"status": status})
                self.last_sent = key
                return
            except ApiException as e:
                if e.status == 404:
                    gone.set()
                    return
                if attempt == 4:
                    log.warning("pod %s/%s status update failed: %s", self.ns, self.pod_name, e)
                time.sleep(0.2 * (attempt + 1))
            except Exception as e:  # connection errors during shutdown
                if attempt == 4:
                    log.warning("pod %s/%s status update failed: %s", self.ns, self.pod_name, e)
                time.sleep(0.2 * (attempt + 1))

"""The operator's only way to the API server: a few generic verbs over the `kubernetes` client.

Every call is checked against `rbac.REQUIRED_RULES` before it leaves (a call the chart's ClusterRole
would not allow raises `NotPermitted` here, in unit tests and in the cluster alike) and counted by
verb and resource, so tests and `bench/operator_500_jobs.py` can read how many requests a job costs.
Calls are synchronous; the runtime runs them on its executor threads (`runtime/executor.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable
from urllib.parse import quote, urlencode

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import rbac
from finetune_api import GROUP, VERSION


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True


RESOURCES: dict[str, Resource] = {
    "FineTuneJob": Resource(GROUP, VERSION, "finetunejobs"),
    "FineTuneQueue": Resource(GROUP, VERSION, "finetunequeues", namespaced=False),
    "ConfigMap": Resource("", "v1", "configmaps"),
    "Service": Resource("", "v1", "services"),
    "Pod": Resource("", "v1", "pods"),
    "Event": Resource("", "v1", "events"),
    "Job": Resource("batch", "v1", "jobs"),
    "Deployment": Resource("apps", "v1", "deployments"),
    "HTTPRoute": Resource("gateway.networking.k8s.io", "v1", "httproutes"),
    "EndpointSlice": Resource("discovery.k8s.io", "v1", "endpointslices"),
    "Secret": Resource("", "v1", "secrets"),
    "Workload": Resource("kueue.x-k8s.io", "v1beta1", "workloads"),
}


class NotPermitted(PermissionError):
    """A call that `rbac.REQUIRED_RULES` does not declare (add the rule, then the chart follows)."""


class K8sError(RuntimeError):
    """An API error other than the ones the callers expect (404 on get/delete, 409 on create)."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {_status_message(body)[:500]}")
        self.status = status


def namespace_terminating(error: K8sError) -> bool:
    """A create refused because the namespace is being deleted (403, cause `NamespaceTerminating`)."""
    return error.status == 403 and "because it is being terminated" in str(error)


def _status_message(body: str) -> str:
    """The `message` of a metav1.Status response body (what the API server says went wrong), else the body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return str(parsed.get("message") or body) if isinstance(parsed, dict) else body


def resource_of(kind: str) -> Resource:
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"kind {kind!r} is not one the operator manages (k8s.RESOURCES)") from None


class K8s:
    """Generic create / get / list / patch / delete / log / event calls, RBAC-checked and counted."""

    def __init__(
        self,
        api_client: client.ApiClient,
        rules: tuple[rbac.PolicyRule, ...] = rbac.REQUIRED_RULES,
        on_request: Callable[[str, str], None] | None = None,
    ) -> None:
        self.api = api_client
        self.rules = rules
        self.on_request = on_request
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------
    def _path(self, res: Resource, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        if res.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        path = f"{base}/{res.plural}"
        if name:
            path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
        return path

    def _call(
        self,
        verb: str,
        res: Resource,
        method: str,
        path: str,
        *,
        sub: str | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
        name: str | None = None,
    ) -> Any:
        resource = f"{res.plural}/{sub}" if sub else res.plural
        if not rbac.allows(res.group, resource, verb, self.rules, name):
            raise NotPermitted(f"{verb} {res.group or 'core'}/{resource} is not in rbac.REQUIRED_RULES"
                               " (of this install's features)")
        with self._lock:
            self.requests[(verb, resource)] += 1
        if self.on_request:
            self.on_request(verb, resource)
        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self.api.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        try:
            response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=60)
            response.read()
        except ApiException as e:
            raise K8sError(e.status or 0, e.reason or "", e.body or "") from None
        text = response.data.decode("utf-8", "replace") if response.data else ""
        if response.status >= 400:
            raise K8sError(response.status, response.reason or "", text)
        return text if raw else (json.loads(text) if text else None)

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    # -- verbs --------------------------------------------------------------------------------
    def create(self, obj: dict[str, Any]) -> bool:
        """Create `obj`; an object of that name that already exists counts as success (False)."""
        res = resource_of(obj["kind"])
        ns = obj["metadata"].get("namespace")
        try:
            self._call("create", res, "POST", self._path(res, ns), body=obj)
        except K8sError as e:
            if e.status == 409:
                return False
            raise
        return True

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = resource_of(kind)
        try:
            return self._call("get", res, "GET", self._path(res, namespace, name), name=name)
        except K8sError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        res = resource_of(kind)
        out = self._call("list", res, "GET", self._path(res, namespace), query={"labelSelector": label_selector})
        return list(out.get("items") or [])

    def patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        """A JSON merge patch (dicts merge, lists are replaced); returns the object as stored."""
        res = resource_of(kind)
        path = self._path(res, namespace, name, subresource)
        return self._call("patch", res, "PATCH", path, sub=subresource, body=patch,
                          content_type="application/merge-patch+json")

    def patch_pod_condition(self, namespace: str, pod: str, condition: dict[str, Any]) -> dict[str, Any]:
        """Set one condition of a pod's status (a readiness gate); a strategic merge keeps the kubelet's."""
        res = resource_of("Pod")
        return self._call("patch", res, "PATCH", self._path(res, namespace, pod, "status"), sub="status",
                          body={"status": {"conditions": [condition]}},
                          content_type="application/strategic-merge-patch+json")

    def patch_status(self, kind: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.patch(kind, namespace, name, {"status": status}, subresource="status")

    def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        propagation: str = "Background",
        grace_period_seconds: int | None = None,
    ) -> bool:
        """Delete; an object that is already gone is success (False)."""
        res = resource_of(kind)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self._call("delete", res, "DELETE", self._path(res, namespace, name), body=body)
        except K8sError as e:
            if e.status == 404:
                return False
            raise
        return True

    def pod_log_tail(self, namespace: str, pod: str, container: str | None, lines: int) -> str:
        res = resource_of("Pod")
        query = {"tailLines": lines, "container": container}
        return self._call("get", res, "GET", self._path(res, namespace, pod, "log"), sub="log", query=query, raw=True)

    def post_event(self, involved: dict[str, Any], event_type: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid)."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta = involved
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{dt.datetime.now().strftime('%s%f')}",
                "namespace": meta["namespace"],
            },
            "involvedObject": meta,
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "eventTime": now,
            "reportingInstance": component,
            "action": reason,
            "count": 1,
        }
        self.create(event)

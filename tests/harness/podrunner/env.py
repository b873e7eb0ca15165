"""What a pod reads from the API and from itself: env and envFrom, downward-API fields and resources,
and ConfigMap and Secret data (for env and for volumes)."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import TYPE_CHECKING, Any

from .paths import expand_vars

if TYPE_CHECKING:
    from .runner import Runner


def parse_quantity(q: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity as pq

    return float(pq(str(q)))


def field_value(runner: Runner, pod: dict, path: str) -> str:
    """A downward-API fieldRef of the pod."""
    md, spec = pod["metadata"], pod["spec"]
    pod_ip = runner.pod_ips.get(md["uid"], "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\[['\"](.+)['\"]\]", path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": md["name"],
        "metadata.namespace": md["namespace"],
        "metadata.uid": md["uid"],
        "spec.nodeName": spec.get("nodeName", runner.node_name),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": runner.node_ip,
        "status.hostIPs": runner.node_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        d = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    raise ValueError(f"unsupported fieldRef {path!r}")


def resource_field_value(runner: Runner, pod: dict, ref: dict, default_container: dict | None) -> str:
    """A downward-API resourceFieldRef: the request (or limit), else the node's capacity, over the divisor."""
    spec = pod["spec"]
    cname = ref.get("containerName")
    cont = default_container
    if cname:
        cont = next(c for c in spec["containers"] + (spec.get("initContainers") or []) if c["name"] == cname)
    kind, _, res = ref["resource"].partition(".")
    resources = (cont or {}).get("resources") or {}
    value = (resources.get(kind) or {}).get(res)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(res)
    if value is None:
        value = runner.capacity.get(res, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(int(math.ceil(parse_quantity(value) / divisor)))


def ref_data(runner: Runner, namespace: str, kind: str, ref: dict, name_key: str = "name") -> dict[str, bytes]:
    """The bytes behind a reference to a ConfigMap (`kind="configMap"`) or a Secret: {} when the
    reference is optional and the object is absent."""
    from kubernetes.client.rest import ApiException

    core = runner.core
    read = core.read_namespaced_config_map if kind == "configMap" else core.read_namespaced_secret
    try:
        obj = json.loads(read(ref[name_key], namespace, _preload_content=False).data)
    except ApiException as e:
        if e.status == 404 and ref.get("optional", False):
            return {}
        raise
    plain, encoded = ("data", "binaryData") if kind == "configMap" else ("stringData", "data")
    data = {k: base64.b64decode(v) for k, v in (obj.get(encoded) or {}).items()}
    data.update({k: v.encode() for k, v in (obj.get(plain) or {}).items()})
    return data


def container_env(runner: Runner, pod: dict, spec: dict) -> dict[str, str]:
    """A container's environment: envFrom, then env in order ($(VAR) sees the variables before it)."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in spec.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for field, kind in (("configMapRef", "configMap"), ("secretRef", "secret")):
            if field in src:
                for k, v in ref_data(runner, ns, kind, src[field]).items():
                    env[prefix + k] = v.decode("utf-8", "replace")
    for e in spec.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand_vars(e.get("value", ""), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(runner, pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_value(runner, pod, vf["resourceFieldRef"], spec)
        else:
            for field, kind in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
                if field in vf:
                    ref = vf[field]
                    data = ref_data(runner, ns, kind, ref)
                    if ref["key"] in data:
                        env[name] = data[ref["key"]].decode("utf-8", "replace")
                    elif not ref.get("optional", False):
                        raise KeyError(f"{kind} {ref['name']} has no key {ref['key']}")
    return env

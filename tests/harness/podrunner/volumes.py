"""Pod volumes as host directories: emptyDir/configMap/secret/projected/downwardAPI -> a per-pod
directory; PVC -> the PV's hostPath or `<pvc-root>/<namespace>/<claim>`, shared by all pods of the
claim; hostPath -> the same path. Text files from ConfigMaps and Secrets are path-mapped."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .env import field_value, ref_data, resource_field_value
from .paths import PathMap, safe_join

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("podrunner")


def prepare_volumes(runner: Runner, pod: dict, pod_dir: Path, volumes: dict[str, Path]) -> None:
    """Create every volume not in `volumes` yet (it fills in), then write the files of the deferred ones."""
    spec, ns, name_of_pod = pod["spec"], pod["metadata"]["namespace"], pod["metadata"]["name"]
    vroot = pod_dir / "volumes"
    vroot.mkdir(parents=True, exist_ok=True)
    deferred: list[tuple[Path, dict[str, bytes]]] = []  # text files to path-map after all volumes exist
    for v in spec.get("volumes") or []:
        name = v["name"]
        if name in volumes:
            continue
        d = vroot / name
        if "persistentVolumeClaim" in v:
            d = pvc_dir(runner, ns, v["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in v:
            d = Path(v["hostPath"]["path"])
            if v["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not d.exists():
                d.mkdir(parents=True, exist_ok=True)
        elif "configMap" in v:
            deferred.append((d, select_items(ref_data(runner, ns, "configMap", v["configMap"]),
                                             v["configMap"].get("items"))))
        elif "secret" in v:
            deferred.append((d, select_items(ref_data(runner, ns, "secret", v["secret"], "secretName"),
                                             v["secret"].get("items"))))
        elif "projected" in v:
            deferred.append((d, projected(runner, pod, v["projected"])))
        elif "downwardAPI" in v:
            deferred.append((d, downward_items(runner, pod, v["downwardAPI"].get("items") or [])))
        elif "emptyDir" in v or "ephemeral" in v:
            pass
        else:
            log.warning("pod %s/%s volume %s: unsupported type %s, using an empty directory",
                        ns, name_of_pod, name, sorted(set(v) - {"name"}))
        d.mkdir(parents=True, exist_ok=True)
        volumes[name] = d
    pm = PathMap(pod_mount_map(spec, volumes))
    for d, files in deferred:
        for rel, content in files.items():
            p = safe_join(d, rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                content = pm(content.decode("utf-8")).encode("utf-8")
            except UnicodeDecodeError:
                pass
            p.write_bytes(content)


def pod_mount_map(spec: dict, volumes: dict[str, Path]) -> dict[str, str]:
    """Union of all containers' mount mappings (used for volume file contents)."""
    mapping: dict[str, str] = {}
    for cs in (spec.get("initContainers") or []) + spec["containers"]:
        for m in cs.get("volumeMounts") or []:
            if m["name"] in volumes and not m.get("subPathExpr"):
                host = volumes[m["name"]]
                if m.get("subPath"):
                    host = host / m["subPath"]
                mapping.setdefault(m["mountPath"], str(host))
    return mapping


def select_items(data: dict[str, bytes], items: list | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    out = {}
    for it in items:
        if it["key"] in data:
            out[it.get("path") or it["key"]] = data[it["key"]]
        else:
            raise KeyError(f"key {it['key']!r} not found")
    return out


def downward_items(runner: Runner, pod: dict, items: list) -> dict[str, bytes]:
    out = {}
    for it in items:
        if "fieldRef" in it:
            out[it["path"]] = field_value(runner, pod, it["fieldRef"]["fieldPath"]).encode()
        elif "resourceFieldRef" in it:
            out[it["path"]] = resource_field_value(runner, pod, it["resourceFieldRef"], None).encode()
    return out


def projected(runner: Runner, pod: dict, proj: dict) -> dict[str, bytes]:
    ns = pod["metadata"]["namespace"]
    out: dict[str, bytes] = {}
    for src in proj.get("sources") or []:
        if "serviceAccountToken" in src:
            sat = src["serviceAccountToken"]
            out[sat["path"]] = service_account_token(runner, pod, sat).encode()
        elif "configMap" in src or "secret" in src:
            kind = "configMap" if "configMap" in src else "secret"
            out.update(select_items(ref_data(runner, ns, kind, src[kind]), src[kind].get("items")))
        elif "downwardAPI" in src:
            out.update(downward_items(runner, pod, src["downwardAPI"].get("items") or []))
    return out


def service_account_token(runner: Runner, pod: dict, sat: dict) -> str:
    """A bound token from the TokenRequest API, as the kubelet mounts it."""
    md = pod["metadata"]
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": int(sat.get("expirationSeconds", 3607)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]},
        },
    }
    if sat.get("audience"):
        body["spec"]["audiences"] = [sat["audience"]]
    resp = runner.core.create_namespaced_service_account_token(
        pod["spec"].get("serviceAccountName") or "default", md["namespace"], body, _preload_content=False)
    return json.loads(resp.data)["status"]["token"]


def pvc_dir(runner: Runner, namespace: str, claim: str) -> Path:
    resp = runner.core.read_namespaced_persistent_volume_claim(claim, namespace, _preload_content=False)
    pvc = json.loads(resp.data)
    vol = (pvc.get("spec") or {}).get("volumeName")
    if vol:
        pv = json.loads(runner.core.read_persistent_volume(vol, _preload_content=False).data)
        hp = (pv.get("spec") or {}).get("hostPath", {}).get("path") or (pv.get("spec") or {}).get("local", {}).get("path")
        if hp:
            d = Path(hp)
            d.mkdir(parents=True, exist_ok=True)
            return d
    d = runner.pvc_root / namespace / claim
    d.mkdir(parents=True, exist_ok=True)
    return d

"""Generate the CRDs from the pydantic models (the single source of truth).

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: every node
typed, no `$ref`, no `anyOf` with null, no `const`, `exclusiveMinimum` as a boolean. We convert rather
than hand-write so the CRD, `ftctl validate` and the operator can never disagree.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from . import GROUP, VERSION
from .common import ApiModel
from .job import ROOT_RULES, FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, ObjectMeta
from .queue import FineTuneQueue, FineTuneQueueSpec, FineTuneQueueStatus

DROP_KEYS = {"title", "$schema", "discriminator"}


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `root`, by the name pydantic uses in `$defs`."""
    seen: dict[str, type[BaseModel]] = {}
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls.__name__ in seen:
            continue
        seen[cls.__name__] = cls
        for field in cls.model_fields.values():
            for arg in _walk_types(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    stack.append(arg)
    return seen


def _walk_types(tp: Any) -> list[Any]:
    out = [tp]
    for arg in getattr(tp, "__args__", ()) or ():
        out.extend(_walk_types(arg))
    return out


def _factory_defaults(classes: dict[str, type[BaseModel]]) -> dict[tuple[str, str], Any]:
    """Defaults that pydantic leaves out of the schema because they come from a factory.

    A nested object defaults to `{}` so the API server then fills in its own fields' defaults.
    """
    defaults: dict[tuple[str, str], Any] = {}
    for name, cls in classes.items():
        for field_name, field in cls.model_fields.items():
            if field.default_factory is None:
                continue
            value = field.default_factory()  # type: ignore[call-arg]
            alias = field.alias or field_name
            if isinstance(value, BaseModel):
                defaults[(name, alias)] = {}
            else:
                defaults[(name, alias)] = copy.deepcopy(value)
    return defaults


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI schema of `model`, with defaults, enums, bounds and CEL rules."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    factory_defaults = _factory_defaults(_model_classes(model))

    def resolve(node: Any, def_name: str | None = None) -> Any:
        if isinstance(node, list):
            return [resolve(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node:
            ref_name = node.pop("$ref").split("/")[-1]
            target = resolve(defs[ref_name], ref_name)
            node = _merge(target, {k: resolve(v) for k, v in node.items()})
            return node
        if "allOf" in node and len(node["allOf"]) == 1:
            inner = resolve(node.pop("allOf")[0])
            return _merge(inner, resolve(node))
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if len(options) == 1:
                inner = resolve(options[0])
                rest = {k: resolve(v) for k, v in node.items()}
                if rest.get("default", "missing") is None:
                    rest.pop("default")
                return _merge(inner, rest)
            types = {o.get("type") for o in options}
            if types == {"integer", "string"}:
                rest = {k: resolve(v) for k, v in node.items() if k != "default" or v is not None}
                return {"x-kubernetes-int-or-string": True, **rest}
            raise ValueError(f"union not expressible structurally: {options}")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DROP_KEYS:
                continue
            if key == "properties":
                props = {}
                for prop, sub in value.items():
                    converted = resolve(sub)
                    if def_name and (def_name, prop) in factory_defaults and "default" not in converted:
                        converted["default"] = factory_defaults[(def_name, prop)]
                    props[prop] = converted
                out["properties"] = props
            elif key == "description":
                out["description"] = " ".join(str(value).split())
            elif key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":
                out["minimum"] = value
                out["exclusiveMinimum"] = True
            elif key == "exclusiveMaximum":
                out["maximum"] = value
                out["exclusiveMaximum"] = True
            elif key == "additionalProperties" and value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif key == "additionalProperties" and value is False:
                continue
            else:
                out[key] = resolve(value)
        if "enum" in out and "type" not in out:
            sample = out["enum"][0]
            out["type"] = "integer" if isinstance(sample, int) else "string"
        if "properties" in out and "type" not in out:
            out["type"] = "object"
        if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out

    schema: dict[str, Any] = resolve(raw, model.__name__)
    _check_structural(schema, model.__name__)
    return schema


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Field-level keys (description, default, extra CEL rules) win over the referenced model's."""
    out = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            out[key] = list(out.get(key, [])) + list(value)
        elif key in DROP_KEYS:
            continue
        else:
            out[key] = value
    return out


def _check_structural(node: Any, path: str) -> None:
    """Fail generation (not the API server) when a node is untyped or uses a forbidden construct."""
    if not isinstance(node, dict):
        return
    for bad in ("$ref", "anyOf", "oneOf", "const", "allOf"):
        if bad in node:
            raise ValueError(f"{path}: `{bad}` is not allowed in a structural schema")
    if "type" not in node and not node.get("x-kubernetes-int-or-string") and not node.get("x-kubernetes-preserve-unknown-fields"):
        raise ValueError(f"{path}: node has no type")
    for prop, sub in node.get("properties", {}).items():
        _check_structural(sub, f"{path}.{prop}")
    if isinstance(node.get("items"), dict):
        _check_structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _check_structural(node["additionalProperties"], f"{path}{{}}")


def _metadata_schema(name_field: Any) -> dict[str, Any]:
    """`metadata.name` restricted as the model restricts it (the only metadata a CRD schema may restrict)."""
    if name_field is None:
        return {"type": "object"}
    name = structural_schema_of_field(name_field)
    return {"type": "object", "properties": {"name": name}}


def structural_schema_of_field(field: Any) -> dict[str, Any]:
    """A string field's pattern and length bounds, as OpenAPI keywords."""
    out: dict[str, Any] = {"type": "string"}
    for meta in field.metadata:
        for attr, key in (("pattern", "pattern"), ("max_length", "maxLength"), ("min_length", "minLength")):
            value = getattr(meta, attr, None)
            if value is not None:
                out[key] = value
    return out


def _root_schema(
    spec: type[ApiModel], status: type[ApiModel], name_field: Any, description: str
) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": _metadata_schema(name_field),
            "spec": structural_schema(spec),
            "status": structural_schema(status),
        },
        **({"x-kubernetes-validations": ROOT_RULES} if spec is FineTuneJobSpec else {}),
    }


def _crd(
    kind: str,
    plural: str,
    short: str,
    scope: str,
    root: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "finetune-operator"}},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["finetune", "all-finetune"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def job_crd() -> dict[str, Any]:
    """The FineTuneJob CRD."""
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        {"name": "Eval", "type": "string", "jsonPath": ".status.evaluation.score"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.serving.endpoint"},
        {"name": "Canary", "type": "string", "jsonPath": ".status.serving.canary.state"},
        {"name": "Tuned%", "type": "integer", "jsonPath": ".status.serving.canary.share"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Queue", "type": "string", "jsonPath": ".spec.queue.name", "priority": 1},
        {"name": "Method", "type": "string", "jsonPath": ".spec.method.type", "priority": 1},
    ]
    root = _root_schema(FineTuneJobSpec, FineTuneJobStatus, ObjectMeta.model_fields["name"], (FineTuneJob.__doc__ or "").strip())
    return _crd("FineTuneJob", "finetunejobs", "ftj", "Namespaced", root, columns)


def queue_crd() -> dict[str, Any]:
    """The FineTuneQueue CRD."""
    columns: list[dict[str, Any]] = [
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy"},
        {"name": "Usage", "type": "string", "jsonPath": ".status.usageSummary"},
        {"name": "Admitted", "type": "integer", "jsonPath": ".status.admitted"},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.pending"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    root = _root_schema(FineTuneQueueSpec, FineTuneQueueStatus, None, (FineTuneQueue.__doc__ or "").strip())
    return _crd("FineTuneQueue", "finetunequeues", "ftq", "Cluster", root, columns)


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD object."""
    return {
        f"{GROUP}_finetunejobs.yaml": job_crd(),
        f"{GROUP}_finetunequeues.yaml": queue_crd(),
    }

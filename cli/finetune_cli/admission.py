"""The CRDs' CEL rules evaluated offline: the very strings the API server runs, not a Python copy.

Each cross-field rule is declared once, as `cel(rule, message, fieldPath)` on its pydantic model; crdgen
copies it into the CRD's `x-kubernetes-validations`, the API server evaluates it at admission, and
`ftctl validate` evaluates the same text here with cel-expr-python (CEL's C++ runtime) and the two
extensions the API server's CEL environment has that the rules use: optional types (`self.?a.orValue(x)`)
and strings (`split`, `replace`). A rule that uses anything else fails to compile here, in the unit tests.
Transition rules (`oldSelf`) need the stored object; only the API server can check them.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext.ext_optional import ExtOptional
from cel_expr_python.ext.ext_strings import ExtStrings

from finetune_api.crdgen import all_crds


@cache
def _env() -> Any:
    return cel.NewEnv(
        variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN}, extensions=[ExtOptional(), ExtStrings()]
    )


@cache
def compile_rule(rule: str) -> Any:
    """The compiled rule; ValueError if this CEL runtime cannot parse or type it."""
    try:
        return _env().compile(rule)
    except RuntimeError as exc:
        raise ValueError(f"CEL rule does not compile offline: {rule}: {exc}") from exc


@cache
def _schemas_by_kind() -> dict[str, dict[str, Any]]:
    """Every CRD's openAPIV3Schema by kind, generated once per process (generation is the costly part)."""
    return {crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for crd in all_crds().values()}


def root_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD of `kind`, as `ftctl crds` generates it."""
    return _schemas_by_kind()[kind]


def rules_with_paths(schema: dict[str, Any], obj: Any, path: str = "") -> Iterator[tuple[str, dict[str, str], Any]]:
    """Every (path, rule, value) the API server evaluates for `obj`: each node's rules with `self` = the
    node's value, for the parts of the object that are present."""
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:
            yield path, rule, obj
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                yield from rules_with_paths(sub, obj[key], f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                yield from rules_with_paths(extra, value, f"{path}[{key}]")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            yield from rules_with_paths(schema["items"], item, f"{path}[{i}]")


def _field(path: str, field_path: str | None) -> str:
    if not field_path:
        return path
    return f"{path}{field_path}" if path else field_path.lstrip(".")


def cel_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    """`field.path: message` for every CEL rule of the CRD that `obj` (defaults applied) breaks."""
    errors: list[str] = []
    for path, rule, value in rules_with_paths(root_schema(kind), obj):
        result = compile_rule(rule["rule"]).eval(data={"self": value})
        field = _field(path, rule.get("fieldPath"))
        if result.type() == cel.Type.ERROR:
            errors.append(f"{field}: rule could not be evaluated: {result.value()}")
        elif result.value() is not True:
            errors.append(f"{field}: {rule['message']}")
    return errors

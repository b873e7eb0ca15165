"""Shared building blocks of the API models.

Every model is camelCase on the wire (Kubernetes convention) and snake_case in Python. Field
docstrings become the CRD descriptions that `kubectl explain` shows, so write them for users.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.alias_generators import to_camel

ApiVersion = Literal["finetune.dev/v1alpha1"]
API_VERSION: ApiVersion = "finetune.dev/v1alpha1"
GROUP, _, VERSION = API_VERSION.partition("/")


class ApiModel(BaseModel):
    """Base of every API object: camelCase aliases, unknown fields refused, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Status objects tolerate fields they do not know (an older operator reads a newer status)."""

    model_config = ConfigDict(extra="ignore")


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; fieldPath makes the API server name the field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def opt(path: str, default: object) -> str:
    """CEL for an optional or defaulted field: `self.?a.?b.orValue(default)`.

    The API server checks rules against `default: {}` objects before nested defaults apply, and a
    user may omit any defaulted field, so rules never select such a field directly. Lists use
    `has()` instead: the cost estimator loses their maxItems through `orValue`.
    """
    head, *rest = path.split(".")
    literal = {True: "true", False: "false"}.get(default) if isinstance(default, bool) else None
    if literal is None:
        literal = f"'{default}'" if isinstance(default, str) else ("[]" if default == [] else str(default))
    return head + "".join(f".?{part}" for part in rest) + f".orValue({literal})"


def immutable(name: str) -> JsonDict:
    """A CEL transition rule that refuses any change of a field once the object exists."""
    return cel("self == oldSelf", f"{name} is immutable: create a new FineTuneJob to train with other settings")


QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
"""A label key or taint key: an optional DNS-subdomain prefix and a name."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration); the pod validation rules are admission rules here."""

    key: str | None = Field(default=None, pattern=QUALIFIED_NAME_PATTERN, max_length=317)
    """Taint key to tolerate; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (default Equal)."""
    value: str | None = Field(default=None, pattern=LABEL_VALUE_PATTERN, max_length=63)
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.key) && self.key != '' || self.?operator.orValue('Equal') == 'Exists'",
                    "a toleration without a key needs operator Exists (it then tolerates every taint)",
                    ".operator",
                ),
                cel(
                    "self.?operator.orValue('Equal') != 'Exists' || self.?value.orValue('') == ''",
                    "operator Exists takes no value",
                    ".value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || self.?effect.orValue('') == 'NoExecute'",
                    "tolerationSeconds applies only to effect NoExecute",
                    ".tolerationSeconds",
                ),
            ]
        }
    }


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    key: str
    """Label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """In, NotIn, Exists or DoesNotExist."""
    values: list[str] | None = None
    """Values for In and NotIn."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector; an empty selector matches everything."""

    match_labels: dict[str, str] | None = None
    """Labels that must all match."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Expressions that must all match."""


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]))?$"
"""A non-negative Kubernetes quantity as apimachinery parses it (`1.2.3` or `lots` is not one); the
exponent is a single integer digit and the text at most 24 characters, so the value fits the pod's int64."""
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""An RFC 1123 label: PVC claims and other object names that appear in pod specs."""


def quantity_field(default: str | None = None, description: str | None = None) -> Any:
    """A resource quantity field: a string checked against the Kubernetes quantity pattern."""
    return Field(default=default, pattern=QUANTITY_PATTERN, max_length=24, description=description)

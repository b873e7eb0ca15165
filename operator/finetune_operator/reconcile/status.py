"""Status arithmetic: typed partial updates of the status models, conditions that keep their transition
time, and patches that only say what changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from finetune_api.common import Condition, StatusModel
from finetune_api.job import FineTuneJobStatus

M = TypeVar("M", bound=StatusModel)

CONDITION_TYPES = ("Validated", "Admitted", "Trained", "Evaluated", "Deployed", "Ready", "Reconciled")


def model_patch(model: type[StatusModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The camelCase merge patch that sets `fields` (snake_case names of `model`), validated now: an unknown
    name raises `TypeError` and a value the model cannot hold raises `pydantic.ValidationError`, so a typo
    fails in the decision instead of being dropped when the status is written. `None` removes a field
    (only one the model allows to be unset)."""
    _check_names(model, fields)
    valid = model.model_validate(dict(fields))
    patch = valid.model_dump(by_alias=True, exclude_none=True, mode="json", include=set(fields))
    for name in fields:
        if getattr(valid, name) is None:
            patch[model.model_fields[name].alias or name] = None
    return patch


def revised(obj: M, **fields: Any) -> M:
    """`obj` with `fields` (snake_case names) changed, checked like `model_patch`; `model_copy(update=)`
    would keep a misspelt name as an attribute the dump never writes."""
    _check_names(type(obj), fields)
    return type(obj).model_validate({**dict(obj), **fields})


def _check_names(model: type[StatusModel], fields: Mapping[str, Any]) -> None:
    unknown = sorted(set(fields) - set(model.model_fields))
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(unknown)} (fields: {', '.join(model.model_fields)})")


def nested_model(section: str) -> type[StatusModel]:
    """The status model of the `FineTuneJobStatus` field `section` (`queue` → `QueueStatus`)."""
    field = FineTuneJobStatus.model_fields.get(section)
    annotation = field.annotation if field is not None else None
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, StatusModel):
            return candidate
    raise TypeError(f"FineTuneJobStatus has no nested status object {section!r}")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status does."""
    value: Literal["True", "False", "Unknown"] = "Unknown" if status is None else ("True" if status else "False")

    def updated(old: Condition | None) -> Condition:
        kept = old.last_transition_time if old is not None and old.status == value else None
        return Condition(type=type_, status=value, reason=reason, message=message, observed_generation=generation,
                         last_transition_time=kept or now)

    out = [updated(c) if c.type == type_ else c for c in conditions]
    if find_condition(conditions, type_) is None:
        out.append(updated(None))
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.type, len(order)))


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def changes(patch: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether applying merge patch `patch` to `current` would change anything."""
    for key, value in patch.items():
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if changes(value, old):
                return True
        elif isinstance(value, dict) and old is None:
            if any(v is not None for v in value.values()):
                return True
        elif old != value:
            return True
    return False

"""Status arithmetic: conditions that keep their transition time, and patches that only say what changed."""

from __future__ import annotations

from typing import Any

CONDITION_TYPES = ("Validated", "Admitted", "Trained", "Evaluated", "Deployed", "Ready", "Reconciled")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status does."""
    value = "Unknown" if status is None else ("True" if status else "False")
    out, found = [], False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        moved = cond.get("status") != value
        out.append({
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if moved else cond.get("lastTransitionTime", now),
            "observedGeneration": generation,
        })
    if not found:
        out.append({
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": generation,
        })
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.get("type", ""), len(order)))


def find_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


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

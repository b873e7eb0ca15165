"""The termination message: the ≤ 4 KiB JSON summary a phase leaves in `/dev/termination-log`.

Kubernetes keeps at most 4096 bytes of it in the pod status, where the operator reads it; `ftctl run`
reads the same file locally. Every message is a `PhaseSummary` (the phase models are in `summaries`):
`ok`, and on failure the trainer's own `reason` and `message`. `encode` shrinks a long summary (long
strings, then long lists) until it fits, and always writes valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from .exit_codes import INFRASTRUCTURE_ERROR, USER_ERROR

MAX_BYTES = 4096
PhaseName = Literal["fetch", "prepare", "train", "evaluate", "merge", "upload", "shadow"]
FailureReason = Literal["UserError", "InfrastructureError", "DiskFull"]
FAILURE_EXIT_CODES: dict[FailureReason, int] = {
    "UserError": USER_ERROR,
    "InfrastructureError": INFRASTRUCTURE_ERROR,
    # ENOSPC: a retry writes to the same full volume, so it is not retried (the exit code of user errors)
    "DiskFull": USER_ERROR,
}


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


FiniteFloat = Annotated[float | None, AfterValidator(_finite)]
"""A figure that is a number or absent: a NaN or infinite value (a diverged loss) reads as absent."""


class ContractModel(BaseModel):
    """camelCase on the wire like the API; unknown fields ignored, so an older reader reads a newer writer;
    a NaN or infinite number (a diverged loss) is written as null, never as invalid JSON."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              use_attribute_docstrings=True, ser_json_inf_nan="null")

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict (camelCase, no unset optional fields)."""
        value: dict[str, Any] = json.loads(self.model_dump_json(by_alias=True, exclude_none=True))
        return value

    def to_line(self) -> str:
        """Compact one-line JSON."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


Summary = TypeVar("Summary", bound="PhaseSummary")


class PhaseSummary(ContractModel):
    """What every termination message says; the phase models add their results."""

    phase: PhaseName
    ok: bool = True
    reason: FailureReason | None = None
    """Set when `ok` is false: the failure class the exit code also carries."""
    message: str | None = None
    """The trainer's own error text (failures) or a one-line result."""
    truncated: bool = False
    """Shortened to fit 4 KiB: long strings and lists were cut, or at worst only `phase` and `ok` are left."""

    @classmethod
    def failure(cls: type[Summary], reason: FailureReason, message: str, **fields: Any) -> Summary:
        return cls(ok=False, reason=reason, message=message, **fields)

    @classmethod
    def parse(cls: type[Summary], text: str | None) -> Summary | None:
        """The summary in `text`; None when absent, not JSON or not this phase's shape."""
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except (ValidationError, ValueError):
            return None

    def to_wire(self) -> dict[str, Any]:
        """`phase`, `ok` and the fields the writer set: a failure carries no zero step or empty results."""
        wire = super().to_wire()
        kept = {type(self).model_fields[name].alias or name for name in self.model_fields_set} | {"phase", "ok"}
        return {key: value for key, value in wire.items() if key in kept}

    def encode(self, max_bytes: int = MAX_BYTES) -> str:
        """Compact JSON of at most `max_bytes` UTF-8 bytes, shortened where needed."""
        return encode_message(self.to_wire(), max_bytes)


def _shrink(value: Any, max_str: int, max_list: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= max_str else value[: max(max_str - 1, 0)] + "…"
    if isinstance(value, list):
        items = [_shrink(v, max_str, max_list) for v in value[:max_list]]
        if len(value) > max_list and all(isinstance(v, str) for v in value):
            items.append(f"… {len(value) - max_list} more")
        return items
    if isinstance(value, dict):
        return {str(k): _shrink(v, max_str, max_list) for k, v in value.items()}
    return value


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def encode_message(summary: dict[str, Any], max_bytes: int = MAX_BYTES) -> str:
    """`summary` as compact JSON of at most `max_bytes` bytes: long strings, then long lists are cut
    (a list of objects loses its tail, a list of strings says how many more), marked `truncated`; when
    nothing else fits, only `phase` and `ok` remain."""
    text = _dump(summary)
    max_str, max_list = 2048, 64
    while len(text.encode()) > max_bytes:
        if max_str <= 16 and max_list <= 1:
            keys = {k: summary[k] for k in ("phase", "ok") if k in summary}
            return _dump({**keys, "truncated": True})
        max_str, max_list = max(max_str // 2, 16), max(max_list // 2, 1)
        text = _dump({**_shrink(summary, max_str, max_list), "truncated": True})
    return text

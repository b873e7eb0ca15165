"""One line that says why a process failed, from its log: what `ftctl` prints instead of a traceback.

The full log stays on disk (its path is printed next to the reason). Known failures are worded as
what to change in the manifest; anything else is the last exception's own message.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable

MAX_CHARS = 300
DISK_FULL_MARKERS = (os.strerror(errno.ENOSPC), f"[Errno {errno.ENOSPC}]")

# (pattern over the log, what to change); groups are named after the template's fields
KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"max_model_len \((?P<asked>\d+)\) is greater than the derived max_model_len "
                   r"\(\w+=(?P<positions>\d+)"),
        "the base model supports {positions} positions; spec.serving.maxModelLen is {asked}",
    ),
)
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(?P<kind>\w*(?:Error|Exception|Exit))(?:: (?P<message>.*))?$")
_PREFIX = re.compile(r"^(?:\(\w+ pid=\d+\) )?(?:(?:ERROR|WARNING|INFO)\s+\S+ \S+ \[[^\]]*\] )?")


def is_disk_full(text: str) -> bool:
    """The text reports ENOSPC (`OSError: [Errno 28] No space left on device`)."""
    return any(marker in text for marker in DISK_FULL_MARKERS)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def reason_from_log(lines: Iterable[str]) -> str | None:
    """The known failure worded as what to change, else the last exception's message (with the
    first detail line when the message only counts errors, as pydantic's does); None if neither."""
    lines = [_PREFIX.sub("", line.rstrip()) for line in lines]
    text = "\n".join(lines)
    for pattern, template in KNOWN:
        matches = list(pattern.finditer(text))
        if matches:
            return template.format(**matches[-1].groupdict())
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION.match(lines[i].strip())
        if match is None or not match.group("message"):
            continue
        message = match.group("message")
        detail = next((line.strip() for line in lines[i + 1 : i + 4] if line.startswith(" ") and line.strip()), "")
        if re.search(r"\d+ validation errors? for", message) and detail:
            message = re.sub(r"\s*\[type=.*$", "", detail)
        return _one_line(f"{match.group('kind')}: {message}")
    return None

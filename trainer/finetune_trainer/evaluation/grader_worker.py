"""The child process that runs a user's `python` grader (started by `graders.PythonGrader`).

Protocol over stdin/stdout, one JSON object per line: the first line is the setup (`source`,
`timeout`); the worker answers `{"ready": true}` or `{"ready": false, "error": ...}`. Then each line
is `{"output", "item"}` and each answer `{"score"}` or `{"error"}`. A per-item alarm turns a slow
`grade` into an error for that item only; the parent kills the worker if even that does not work.

Before user code runs the worker limits its memory and file writes, and replaces `socket.socket`
so that code outside a network namespace cannot open connections either.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import socket
import sys
import traceback

MEMORY_LIMIT = 2 << 30


class GraderTimeout(Exception):
    pass


def _limit_resources() -> None:
    for limit, value in ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_CORE, 0)):
        soft, hard = resource.getrlimit(limit)
        if hard == resource.RLIM_INFINITY or hard > value:
            resource.setrlimit(limit, (value, value))


def _block_sockets() -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in graders")

    socket.socket = refuse  # type: ignore[assignment, misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]


def _on_alarm(signum: int, frame: object) -> None:
    raise GraderTimeout()


def _send(out: object, message: dict) -> None:
    out.write(json.dumps(message) + "\n")  # type: ignore[attr-defined]
    out.flush()  # type: ignore[attr-defined]


def _error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if f.filename == "<grader>"]
    where = f" (line {user[-1].lineno})" if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # user prints must not break the protocol
    setup = json.loads(sys.stdin.readline())
    timeout = float(setup["timeout"])
    _limit_resources()
    _block_sockets()
    signal.signal(signal.SIGALRM, _on_alarm)
    namespace: dict = {"__name__": "grader"}
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        exec(compile(setup["source"], "<grader>", "exec"), namespace)  # noqa: S102 - the sandboxed user grader
        signal.setitimer(signal.ITIMER_REAL, 0)
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source does not define grade(output, item)")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, never raised
        signal.setitimer(signal.ITIMER_REAL, 0)
        message = f"loading the grader took more than {timeout:g} s" if isinstance(exc, GraderTimeout) else _error(exc)
        _send(out, {"ready": False, "error": message})
        return
    _send(out, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            value = grade(request["output"], request["item"])
            signal.setitimer(signal.ITIMER_REAL, 0)
            score = float(value)
            if math.isnan(score):
                raise ValueError("grade returned NaN")
            _send(out, {"score": min(max(score, 0.0), 1.0)})
        except GraderTimeout:
            _send(out, {"error": f"timed out after {timeout:g} s"})
        except BaseException as exc:  # noqa: BLE001 - one item's failure is that item's error
            signal.setitimer(signal.ITIMER_REAL, 0)
            _send(out, {"error": _error(exc)})


if __name__ == "__main__":
    main()

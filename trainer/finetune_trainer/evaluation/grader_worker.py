"""The child process that runs a user's `python` grader (started by `graders.PythonGrader`).

Protocol over stdin/stdout, one JSON object per line: the first line is the setup (`source`,
`timeout`); the worker answers `{"ready": true}` or `{"ready": false, "error": ...}`. Then each line
is `{"output", "item"}` and each answer `{"score"}` or `{"error"}`. A per-item alarm turns a slow
`grade` into an error for that item only; the parent kills the worker if even that does not work.

Before user code runs the worker limits its memory and file writes and installs a seccomp filter
that refuses `socket()` and `io_uring_setup()` (EPERM) to itself and every process it starts: no
`_socket`, `ctypes` or subprocess trick can open a connection. Installing a filter needs no capability
(only `no_new_privs`) and stacks on the pod's RuntimeDefault profile, unlike `unshare -n`, which pods
without CAP_SYS_ADMIN cannot run (DESIGN.md §9 "Grader sandbox"). Without the filter no user code runs.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import platform
import resource
import signal
import struct
import sys
import traceback

MEMORY_LIMIT = 2 << 30

# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h): the architecture's audit id and the numbers
# of the syscalls refused. Both have io_uring_setup (io_uring's IORING_OP_SOCKET opens sockets) at 425.
_ARCHES: dict[str, tuple[int, int]] = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
_NR_IO_URING_SETUP = 425
_X32_SYSCALL_BIT = 0x40000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
_LD_ABS_W, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_OFFSET_NR, _OFFSET_ARCH = 0, 4


class SandboxUnavailable(RuntimeError):
    pass


class GraderTimeout(Exception):
    pass


def _limit_resources() -> None:
    for limit, value in ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_CORE, 0)):
        soft, hard = resource.getrlimit(limit)
        if hard == resource.RLIM_INFINITY or hard > value:
            resource.setrlimit(limit, (value, value))


def _no_network_filter(machine: str) -> bytes:
    """The classic-BPF seccomp program: a foreign ABI (i386's socketcall via int 0x80, x32) gets EPERM
    for everything; socket() and io_uring_setup() get EPERM; all else is allowed."""
    if machine not in _ARCHES:
        raise SandboxUnavailable(f"no seccomp filter for {machine}")
    audit_arch, nr_socket = _ARCHES[machine]
    program = [
        (_LD_ABS_W, 0, 0, _OFFSET_ARCH),
        (_JEQ, 1, 0, audit_arch),
        (_RET, 0, 0, _RET_EPERM),
        (_LD_ABS_W, 0, 0, _OFFSET_NR),
        (_JGE, 2, 0, _X32_SYSCALL_BIT),
        (_JEQ, 1, 0, nr_socket),
        (_JEQ, 0, 1, _NR_IO_URING_SETUP),
        (_RET, 0, 0, _RET_EPERM),
        (_RET, 0, 0, _RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def _deny_network() -> None:
    """Install the filter for this process and its children (SandboxUnavailable when it cannot be)."""
    if sys.platform != "linux":
        raise SandboxUnavailable(f"no seccomp on {sys.platform}")
    code = _no_network_filter(platform.machine())
    buffer = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0 or libc.prctl(
            _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise SandboxUnavailable(f"prctl failed: {errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())}")


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
    try:
        _deny_network()
    except SandboxUnavailable as exc:
        _send(out, {"ready": False, "error": f"the grader sandbox could not start ({exc}): no python grader runs without it"})
        return
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

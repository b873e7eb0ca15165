"""Exec a container's argv inside namespaces of its own (run by network.PodNetwork.sandbox_argv): the pod's
network namespace when it has one (`--netns`, made by cni.BridgeCNI), a new UTS namespace with the pod's
hostname (when given; the test harness's operator keeps the host's) and a new mount namespace (private propagation) in which the pod's /etc files are bind-mounted over the host's; then exec. Nothing is changed unless both namespaces were
created, so the host's hostname and /etc are never touched. Standalone (stdlib only, started with
`python -I -S`) because it runs before the container's program, in the container's process: its pid,
process group and signals are the container's."""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_own_namespaces(uts: bool) -> None:
    """A new mount namespace (and UTS namespace when `uts`); mounts made afterwards never propagate to the host."""
    flags = CLONE_NEWNS | (CLONE_NEWUTS if uts else 0)
    _check(_libc.unshare(flags), "unshare(CLONE_NEWNS" + (" | CLONE_NEWUTS)" if uts else ")"))
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / a private mount")


def enter_network_namespace(path: str) -> None:
    """Join the pod's network namespace (shared by all its containers, as the pause container's is)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path}, CLONE_NEWNET)")
    finally:
        os.close(fd)


def bind_mount(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind mount {source} over {target}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="sandbox.py")
    ap.add_argument("--hostname", default=None, help="a UTS namespace of its own with this hostname")
    ap.add_argument("--netns", default=None, metavar="PATH")
    ap.add_argument("--bind", action="append", default=[], metavar="SOURCE:TARGET")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if args.netns:
            enter_network_namespace(args.netns)
        enter_own_namespaces(uts=args.hostname is not None)
        if args.hostname:
            socket.sethostname(args.hostname)
        for spec in args.bind:
            source, _, target = spec.partition(":")
            bind_mount(source, target)
    except OSError as e:  # e.g. not root: the runner needs CAP_SYS_ADMIN for a pod's namespaces
        sys.exit(f"sandbox: cannot give the container its pod's identity: {e}")
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.exit(f"sandbox: cannot run {command[0]!r}: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Exec a container's argv inside the pod's namespaces (run by network.PodNetwork.sandbox_argv after
`unshare --mount --uts`): set the pod's hostname, bind-mount the pod's /etc files over the host's, exec.
Standalone (stdlib only, started with `python -I -S`) because it runs before the container's program,
in the container's process: its pid, process group and signals are the container's."""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import sys

MS_BIND = 4096


def bind_mount(source: str, target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount {source} over {target}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="sandbox.py")
    ap.add_argument("--hostname", required=True)
    ap.add_argument("--bind", action="append", default=[], metavar="SOURCE:TARGET")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    socket.sethostname(args.hostname)
    for spec in args.bind:
        source, _, target = spec.partition(":")
        bind_mount(source, target)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.exit(f"sandbox: cannot run {command[0]!r}: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark (static): how much Go compiling a set of builds sharing one GOCACHE does (docs/DESIGN.md §8).

CPU time of a cold build is what CI pays, but it is only measurable on a quiet machine; this counts the
work instead. For each build, `go list -deps -json` gives the packages it compiles; each compile is keyed
the way the build cache keys it (import path, module version, the keys of its imports; with -trimpath the
directory does not matter), so two builds that share a package at the same version and with the same
dependencies count it once. Work is the Go (and assembly) source bytes compiled.

Each BUILD is NAME=DIR:PATTERN[,PATTERN...] (DIR: a module directory; go runs there with the caller's
GOFLAGS, GOMODCACHE, GOPROXY). Prints one JSON object: per build its compiles and MB, and the union.

Usage: python bench/go_compile_work.py controlplane=tests/controlplane:. tools=tests/tools:tool,./ft-coredns
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any


def go_list(directory: str, patterns: list[str]) -> dict[str, dict[str, Any]]:
    out = subprocess.run(["go", "list", "-deps", "-json", *patterns], cwd=directory, check=True,
                         capture_output=True, text=True).stdout
    decoder, pos, pkgs = json.JSONDecoder(), 0, {}
    out = out.strip()
    while pos < len(out):
        pkg, pos = decoder.raw_decode(out, pos)
        pkgs[pkg["ImportPath"]] = pkg
        while pos < len(out) and out[pos].isspace():
            pos += 1
    return pkgs


def compiles(pkgs: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Cache key -> source bytes of every package the build compiles."""
    keys: dict[str, str] = {}

    def key(path: str) -> str:
        if path not in keys:
            pkg, module = pkgs[path], pkgs[path].get("Module") or {}
            imports = sorted(key(i) for i in pkg.get("Imports", []) if i in pkgs)
            text = f"{path} {module.get('Path')}@{module.get('Version')} {' '.join(imports)}"
            keys[path] = hashlib.sha256(text.encode()).hexdigest()
        return keys[path]

    return {key(path): sum(os.path.getsize(os.path.join(pkg["Dir"], f))
                           for f in pkg.get("GoFiles", []) + pkg.get("SFiles", []))
            for path, pkg in pkgs.items() if path not in ("unsafe", "C")}


def main(args: list[str]) -> None:
    builds = {}
    for arg in args:
        name, _, spec = arg.partition("=")
        directory, _, patterns = spec.rpartition(":")
        builds[name] = compiles(go_list(directory, patterns.split(",")))
    union: dict[str, int] = {}
    for work in builds.values():
        union.update(work)
    report = {name: {"compiles": len(work), "source_mb": round(sum(work.values()) / 1e6, 1)}
              for name, work in builds.items()}
    report["union"] = {"compiles": len(union), "source_mb": round(sum(union.values()) / 1e6, 1)}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])

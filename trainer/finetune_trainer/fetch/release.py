"""`python -m finetune_trainer.fetch.release --cache DIR --holder NS.JOB [--max-bytes N]`: the release
step. A job that no longer reads its sources (failed, or deleted) drops its hold on the cache, and the
cache is brought back under its size limit at once, so the space is free before the next fetch.

The operator does not mount the artifacts claim; it runs this as a small CPU Job (DESIGN.md §9 Sources).
Releasing a hold that is not there is a success: a retried or repeated release changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK

from .cache import SourceCache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer.fetch.release", description=__doc__)
    parser.add_argument("--cache", required=True, help="the source cache's root directory")
    parser.add_argument("--holder", required=True, help="the hold to drop: <namespace>.<job>")
    parser.add_argument("--max-bytes", type=int, default=None, help="evict down to this size (no limit when absent)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cache = SourceCache(Path(args.cache), args.max_bytes)
    try:
        cache.release(args.holder)
        print(f"release: {args.holder} holds nothing in {args.cache}", file=sys.stderr)
        for gone in cache.evict():
            print(f"release: evicted {gone} (cache over its size limit)", file=sys.stderr)
    except OSError as err:  # the volume, not the user: the Job retries
        print(f"release: {args.cache}: {err}", file=sys.stderr)
        return INFRASTRUCTURE_ERROR
    return OK


if __name__ == "__main__":
    sys.exit(main())

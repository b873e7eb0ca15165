"""`python -m finetune_trainer <phase> --config FILE`: one entry point for every pod and local run.

Each phase lives in `finetune_trainer.phases.<phase>` and is imported only when chosen, so `prepare`
(CPU only) never pays for torch. `--local_rank` is accepted because the `deepspeed` launcher passes it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

PHASES = ("fetch", "prepare", "train", "evaluate", "merge", "upload", "shadow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer", description=__doc__)
    parser.add_argument("phase", choices=PHASES)
    parser.add_argument("--config", required=True, help="resolved config JSON (ResolvedConfig)")
    parser.add_argument("--baseline", action="store_true",
                        help="evaluate: only the base model, before training (its outputs are kept for the final evaluation)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(f"finetune_trainer.phases.{args.phase}")
    if args.baseline:
        if args.phase != "evaluate":
            parser.error("--baseline applies to the evaluate phase only")
        return int(module.main(args.config, baseline=True))
    return int(module.main(args.config))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m finetune_trainer merge --config FILE`: merge the adapter into its base for serving."""

from __future__ import annotations


def main(config_path: str) -> int:
    from finetune_trainer.train.exit_codes import run_phase
    from finetune_trainer.train.merge import run_merge

    return run_phase("merge", config_path, run_merge)

"""`python -m finetune_trainer shadow --config FILE`: a canary's shadow grading (both arms, same prompts)."""

from __future__ import annotations


def main(config_path: str) -> int:
    from finetune_trainer.evaluation.shadow import run_shadow
    from finetune_trainer.train.exit_codes import run_phase

    return run_phase("shadow", config_path, run_shadow)

"""`python -m finetune_trainer train --config FILE`: one training attempt in every launched process.

Exit 0 when done, 1 on a user error, 2 on an infrastructure error, 143 after SIGTERM (checkpoint saved).
"""

from __future__ import annotations

import faulthandler
import os


def main(config_path: str) -> int:
    from finetune_trainer.process_group import die_with_parent
    from finetune_trainer.train.callbacks import StopOnSigterm
    from finetune_trainer.train.exit_codes import run_phase
    from finetune_trainer.train.runner import run_training, shutdown_distributed

    # torchrun starts each worker in a session of its own: a launcher killed outright would orphan it
    die_with_parent(os.getppid())
    faulthandler.enable()  # a native crash (SIGABRT, SIGSEGV) prints every thread's Python stack
    stop = StopOnSigterm().install()
    code = None
    try:
        code = run_phase(
            "train",
            config_path,
            lambda config: run_training(config, stop).summary(),
            write_message=os.environ.get("RANK", "0") == "0",
        )
        return code
    finally:
        shutdown_distributed(finished=code == 0)

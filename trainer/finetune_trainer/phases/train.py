"""`python -m finetune_trainer train --config FILE`: one training attempt in every launched process.

Exit 0 when done, 1 on a user error, 2 on an infrastructure error, 143 after SIGTERM (checkpoint saved).
"""

from __future__ import annotations

import faulthandler
import os
import sys


def main(config_path: str) -> int:
    from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR
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
        if shutdown_distributed(finished=code == 0):
            _exit_without_finalization(INFRASTRUCTURE_ERROR if code is None else code)


def _exit_without_finalization(code: int) -> None:
    """End a launched worker as soon as its process group is gone.

    Everything the run produces (model, checkpoint, progress, termination message) is written and its
    files are closed by now. What remains is interpreter and C++ static finalization, where Gloo's and
    DeepSpeed's threads can still abort a finished run ("terminate called without an active exception",
    SIGABRT: rare, and still seen after `destroy_process_group`). `os._exit` skips that finalization,
    so a clean run exits 0 and the launcher never mistakes it for a crashed worker.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""`python -m finetune_trainer.train.launcher torchrun|accelerate ARGS...`: the launcher, run in this
process, ending with the exit code of DESIGN.md §4.

torchrun and `accelerate launch` exit 1 whenever any worker fails. A worker that died of a signal (a
crash, the OOM killer, an abort at teardown) would then read as a user error (exit 1, never retried).
Run in-process, the launcher's `ChildFailedError` carries every worker's exit code: 1 anywhere is the
user's error; only SIGTERM exits mean stopped after a checkpoint (143); anything else is infrastructure
(2, retried from the latest checkpoint). A rendezvous that fails before any worker starts is
infrastructure too (2).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR, OK, SIGTERM_EXIT, launcher_exit_code
from finetune_api.contract.summaries import TrainSummary

from finetune_trainer.termination import write_termination_message

LAUNCHERS = ("torchrun", "accelerate")


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _launch(launcher: str, args: list[str]) -> None:
    if launcher == "torchrun":
        from torch.distributed.run import main as torchrun

        torchrun(args)
    else:
        from accelerate.commands.launch import launch_command, launch_command_parser

        launch_command(launch_command_parser().parse_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in LAUNCHERS:
        print(f"usage: python -m finetune_trainer.train.launcher {{{'|'.join(LAUNCHERS)}}} ARGS...", file=sys.stderr)
        return INFRASTRUCTURE_ERROR
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    try:
        _launch(argv[0], argv[1:])
    except (DistError, RendezvousError) as err:
        # The rendezvous itself failed (master port taken, master unreachable, timeout): no worker ran and
        # nothing is wrong with the user's input, so it is retried, never read as a user error (exit 1).
        text = f"rendezvous failed: {type(err).__name__}: {err}"
        print(f"train: {text}", file=sys.stderr)
        write_termination_message(TrainSummary.failure("InfrastructureError", text[:1024]))
        return INFRASTRUCTURE_ERROR
    except ChildFailedError as err:
        codes = {rank: failure.exitcode for rank, failure in sorted(err.failures.items())}
    except subprocess.CalledProcessError as err:  # accelerate's single-process launcher
        codes = {0: err.returncode}
    except SignalException:
        return SIGTERM_EXIT
    else:
        return OK
    code = launcher_exit_code(list(codes.values()))
    text = ", ".join(f"rank {rank} {_describe(c)}" for rank, c in codes.items())
    print(f"train: workers failed ({text}): exit {code}", file=sys.stderr)
    if code == INFRASTRUCTURE_ERROR:
        write_termination_message(TrainSummary.failure("InfrastructureError", f"training processes failed: {text}"))
    return code


if __name__ == "__main__":
    sys.exit(main())

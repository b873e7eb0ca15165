"""The launcher command of the training processes: torchrun or accelerate launch.

One function serves the operator's pod builder and `ftctl run`. In a pod, the node rank is only
known at runtime (the Indexed Job's completion index): pass `Topology.for_pod(...)`, whose node rank
and the rendezvous point are the Kubernetes env references `$(PET_NODE_RANK)`, `$(PET_MASTER_ADDR)` and
`$(PET_MASTER_PORT)` — the kubelet expands them in container args, no shell involved. Locally, `Topology.local(...)` runs every process on this machine (gloo on CPU).
DeepSpeed's config does not travel on the command line: every process builds it from the spec and
hands it to the Trainer, so the launcher only starts processes and the ZeRO settings have one source.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

from finetune_api.job import FineTuneJobSpec

PET_NODE_RANK_REF = "$(PET_NODE_RANK)"
PET_MASTER_ADDR_REF = "$(PET_MASTER_ADDR)"
PET_MASTER_PORT_REF = "$(PET_MASTER_PORT)"
DEFAULT_MASTER_PORT = 29500
ATTEMPT_ENV = "FT_ATTEMPT"
"""The training attempt (0-based) of this launch: set on the pods and by `ftctl run`, recorded in run.json."""


def processes_per_node(spec: FineTuneJobSpec) -> int:
    """spec.resources.processesPerNode, else the GPUs per node, else 1 (CPU)."""
    res = spec.resources
    return res.processes_per_node or max(res.gpus_per_node, 1)


def free_port() -> int:
    """A free TCP port on loopback (local runs: several engineers and tests share the machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Topology:
    """Where the processes of one run are: nodes × processes per node, and the rendezvous point."""

    nnodes: int
    nproc_per_node: int
    node_rank: str
    master_addr: str
    master_port: str
    """A port number, or the env reference the kubelet expands in a pod."""

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @classmethod
    def for_pod(cls, spec: FineTuneJobSpec) -> Topology:
        """The topology of the training pods (DESIGN.md §4): node rank and rendezvous point come from the
        pod's PET_* variables (the rank from the completion index, the master from the builder)."""
        return cls(spec.resources.nodes, processes_per_node(spec), PET_NODE_RANK_REF, PET_MASTER_ADDR_REF,
                   PET_MASTER_PORT_REF)

    @classmethod
    def local(cls, spec: FineTuneJobSpec, nproc: int | None = None, master_port: int | None = None) -> Topology:
        """Every process on this machine (`ftctl run`, tests)."""
        return cls(1, nproc or processes_per_node(spec), "0", "127.0.0.1", str(master_port or free_port()))


def trainer_module_args(phase: str, config_path: str) -> list[str]:
    """`-m finetune_trainer <phase> --config FILE` as launcher arguments."""
    return ["-m", "finetune_trainer", phase, "--config", config_path]


def launcher_prefix(python: str = "python") -> list[str]:
    """Our in-process launcher wrapper (`train/launcher.py`): torchrun and accelerate exit 1 for any worker
    failure; the wrapper turns the workers' exit codes into ours (a crashed worker is retried)."""
    return [python, "-m", "finetune_trainer.train.launcher"]


def launch_argv(spec: FineTuneJobSpec, config_path: str, topology: Topology, python: str | None = None) -> list[str]:
    """The full argv that starts `python -m finetune_trainer train --config FILE` in every process.

    torchrun derives RANK/WORLD_SIZE from nodes, processes and node rank (it also reads the same
    values from the `PET_*` variables). accelerate launch gets the total process count and
    `--multi_gpu` whenever more than one process runs (on CPU too: `--cpu` would start only one).
    Without DeepSpeed, `--mixed_precision no` keeps an accelerate config file's default out of the run:
    the Trainer's own bf16/fp16 arguments set the precision.
    """
    python = python or sys.executable
    if spec.resources.launcher == "accelerate":
        argv = [
            *launcher_prefix(python), "accelerate",
            "--num_machines", str(topology.nnodes),
            "--machine_rank", topology.node_rank,
            "--main_process_ip", topology.master_addr,
            "--main_process_port", topology.master_port,
            "--num_processes", str(topology.world_size),
            "--dynamo_backend", "no",
        ]
        if topology.world_size > 1:
            argv.append("--multi_gpu")
        if spec.resources.deepspeed.zero_stage == 0:
            argv += ["--mixed_precision", "no"]
        return argv + trainer_module_args("train", config_path)
    return [
        *launcher_prefix(python), "torchrun",
        "--nnodes", str(topology.nnodes),
        "--nproc_per_node", str(topology.nproc_per_node),
        "--node_rank", topology.node_rank,
        "--master_addr", topology.master_addr,
        "--master_port", topology.master_port,
        *trainer_module_args("train", config_path),
    ]


def pod_launch(spec: FineTuneJobSpec, config_path: str) -> tuple[list[str], list[str]]:
    """Container command and args of a training pod: the launcher wrapper, then its arguments."""
    prefix = launcher_prefix("python")
    argv = launch_argv(spec, config_path, Topology.for_pod(spec), python="python")
    return argv[: len(prefix)], argv[len(prefix):]


def launch_env(spec: FineTuneJobSpec, threads_per_process: int = 1) -> dict[str, str]:
    """Environment the launched processes need on top of the pod's (or caller's)."""
    env = {"OMP_NUM_THREADS": str(threads_per_process), "TOKENIZERS_PARALLELISM": "false"}
    if spec.resources.gpus_per_node == 0:
        env["DS_ACCELERATOR"] = "cpu"
    return env

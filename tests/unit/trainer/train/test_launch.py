import pytest
from finetune_api.job import FineTuneJobSpec

from finetune_api.contract.launch import PET_MASTER_ADDR_REF, PET_MASTER_PORT_REF, PET_NODE_RANK_REF, Topology, launch_argv, launch_env

pytestmark = pytest.mark.unit


def spec(resources: dict) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"model": {"uri": "/m"}, "datasets": {"train": {"uri": "/t.jsonl"}}, "resources": resources})


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_torchrun_in_a_pod_takes_the_node_rank_from_the_pet_variable():
    s = spec({"nodes": 2, "gpusPerNode": 4})
    argv = launch_argv(s, "/etc/ft/config.json", Topology.for_pod(s), python="python")
    assert argv[:4] == ["python", "-m", "finetune_trainer.train.launcher", "torchrun"]
    assert flag(argv, "--nnodes") == "2" and flag(argv, "--nproc_per_node") == "4"
    assert flag(argv, "--node_rank") == PET_NODE_RANK_REF
    assert flag(argv, "--master_addr") == PET_MASTER_ADDR_REF and flag(argv, "--master_port") == PET_MASTER_PORT_REF
    assert argv[-5:] == ["-m", "finetune_trainer", "train", "--config", "/etc/ft/config.json"]


def test_accelerate_gets_total_processes_machine_rank_and_multi_gpu():
    s = spec({"nodes": 2, "gpusPerNode": 8, "launcher": "accelerate", "deepspeed": {"zeroStage": 3}})
    argv = launch_argv(s, "/c.json", Topology.for_pod(s), python="python")
    assert flag(argv, "--num_processes") == "16" and flag(argv, "--num_machines") == "2"
    assert flag(argv, "--machine_rank") == PET_NODE_RANK_REF and flag(argv, "--main_process_ip") == PET_MASTER_ADDR_REF
    assert "--multi_gpu" in argv
    assert "--mixed_precision" not in argv  # DeepSpeed's config owns precision


def test_single_process_accelerate_is_not_multi_gpu_and_local_runs_use_loopback():
    s = spec({"gpusPerNode": 0, "launcher": "accelerate"})
    top = Topology.local(s)
    argv = launch_argv(s, "/c.json", top)
    assert "--multi_gpu" not in argv and flag(argv, "--num_processes") == "1"
    assert top.master_addr == "127.0.0.1" and top.node_rank == "0" and 1024 < int(top.master_port) < 65536
    assert launch_env(s)["DS_ACCELERATOR"] == "cpu"


def test_local_topology_counts_processes_per_node():
    s = spec({"gpusPerNode": 0, "processesPerNode": 2})
    assert Topology.local(s).world_size == 2
    assert Topology.local(s, nproc=3).world_size == 3

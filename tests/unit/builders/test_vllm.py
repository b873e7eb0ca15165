"""vLLM flags: one function for the cluster and the local server; LoRA ranks match vLLM's set."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from finetune_api.contract.vllm import LORA_RANKS, LoraModule, max_lora_rank, vllm_args, vllm_env

pytestmark = pytest.mark.unit


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _installed_vllm_lora_ranks() -> tuple[int, ...]:
    """`MaxLoRARanks` read from the installed vLLM's source (importing vLLM takes tens of seconds)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vLLM is not installed in this environment")
    tree = ast.parse((Path(spec.origin).parent / "config" / "lora.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MaxLoRARanks" for t in node.targets):
            return tuple(ast.literal_eval(node.value.slice))
    raise AssertionError("MaxLoRARanks not found in vllm/config/lora.py")


def test_lora_ranks_are_those_of_the_installed_vllm() -> None:
    assert _installed_vllm_lora_ranks() == LORA_RANKS


@pytest.mark.parametrize(("rank", "flag"), [(8, "8"), (16, "16"), (48, "64"), (512, "512"), (1, "1"), (300, "320")])
def test_max_lora_rank_rounds_up_to_an_allowed_value(rank: int, flag: str) -> None:
    args = vllm_args("/m", ["base"], lora_modules=[LoraModule("ft", "/a", "base")], lora_rank=rank)
    assert _flag(args, "--max-lora-rank") == flag


def test_a_rank_above_vllms_maximum_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.adapter\.r=1024"):
        max_lora_rank(1024)


def test_lora_modules_are_json_naming_the_base() -> None:
    mods = [LoraModule("a", "/x/a", "base"), LoraModule("b", "/x/b", "base")]
    args = vllm_args("/m", ["base"], lora_modules=mods, lora_rank=8)
    i = args.index("--lora-modules")
    assert [json.loads(a) for a in args[i + 1 : i + 3]] == [
        {"name": "a", "path": "/x/a", "base_model_name": "base"},
        {"name": "b", "path": "/x/b", "base_model_name": "base"},
    ]
    assert "--enable-lora" in args and _flag(args, "--max-loras") == "2" and "--max-cpu-loras" not in args


def test_a_large_pool_keeps_extra_adapters_in_cpu_memory() -> None:
    mods = [LoraModule(f"a{i}", f"/x/{i}", "base") for i in range(20)]
    args = vllm_args("/m", ["base"], lora_modules=mods, lora_rank=8)
    assert _flag(args, "--max-loras") == "16" and _flag(args, "--max-cpu-loras") == "20"


def test_cpu_flags_and_dtype() -> None:
    cpu = vllm_args("/m", ["ft@2", "ft"], cpu=True, dtype="auto", max_model_len=256)
    assert "--enforce-eager" in cpu and _flag(cpu, "--dtype") == "float32" and _flag(cpu, "--max-model-len") == "256"
    assert cpu[cpu.index("--served-model-name") + 1 : cpu.index("--port")] == ["ft@2", "ft"]
    assert _flag(vllm_args("/m", ["x"], cpu=True, dtype="float16"), "--dtype") == "bfloat16"
    gpu = vllm_args("/m", ["x"], dtype="auto", tensor_parallel_size=2)
    assert _flag(gpu, "--dtype") == "bfloat16" and _flag(gpu, "--tensor-parallel-size") == "2" and "--enforce-eager" not in gpu




def test_on_cpu_one_worker_runs_inside_the_engine_process_when_asked_and_gpus_keep_vllms_layout() -> None:
    assert vllm_env(cpu=True, kv_cache_gib=2, worker_in_engine=True) == {
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in vllm_env(cpu=True)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in vllm_env(cpu=True, tensor_parallel_size=2, worker_in_engine=True)
    gpu = vllm_env(cpu=False, worker_in_engine=True)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in gpu and "VLLM_CPU_KVCACHE_SPACE" not in gpu

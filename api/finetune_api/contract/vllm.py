"""vLLM server flags: ONE pure function for the cluster Deployments and the local server.

`vllm_args` returns the arguments after `python -m vllm.entrypoints.openai.api_server`, so
`ftctl serve`, `ftctl run` and the Deployments run vLLM the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePosixPath
from collections.abc import Sequence
from dataclasses import dataclass

from ..job import DEFAULT_MAX_LENGTH, DataReport, FineTuneJobSpec
from .vllm_flags import LORA_RANKS as LORA_RANKS  # re-exported: vLLM's limits are read here too

VLLM_PORT = 8000
VLLM_COMMAND = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
MAX_LORAS_PER_BATCH = 16
"""Adapters resident on the accelerator at once; more stay in CPU memory (`--max-cpu-loras`)."""
RUNTIME_LORA_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
"""Turns on `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` (vLLM `envs.py`)."""
API_KEY_ENV = "VLLM_API_KEY"
"""vLLM reads its bearer key from this variable when `--api-key` is absent: the key stays out of the args."""
API_KEY_SECRET = "finetune-serving-api-key"
"""The Secret, in each job namespace, whose `API_KEY_SECRET_KEY` entry is the serving endpoints' API key."""
API_KEY_SECRET_KEY = "api-key"
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
"""GiB of KV cache on vLLM's CPU backend; unset, vLLM sizes it from the node's RAM."""
ONE_PROCESS_ENGINE_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
"""`0` on CPU with one worker: vLLM's CPU platform keeps the worker inside the engine-core process (the
`uni` executor) instead of spawning one more process for it (`platforms/cpu.py`)."""


@dataclass(frozen=True)
class LoraModule:
    """One adapter as vLLM's JSON `--lora-modules` entry; it names the base it was trained on."""

    name: str
    path: str
    base_model_name: str

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "path": self.path, "base_model_name": self.base_model_name}, separators=(",", ":"))


@dataclass(frozen=True)
class LoraCapacity:
    """A pool that loads adapters at run time: LoRA on, sized by the admin, no adapter named at start."""

    max_loras: int
    """`--max-loras`: adapters in one batch (on the accelerator at once)."""
    max_cpu_loras: int
    """`--max-cpu-loras`: adapters kept loaded in CPU memory; more are evicted least-recently-used."""
    max_lora_rank: int
    """`--max-lora-rank`: the largest adapter rank the pool accepts."""


def max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds `rank` (vLLM refuses any other value)."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"spec.adapter.r={rank}: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}; serve it merged instead")


def vllm_dtype(dtype: str, cpu: bool) -> str:
    """`spec.model.dtype` as vLLM's `--dtype`: auto is bfloat16 on GPUs, float32 on CPU (vLLM's CPU
    backend has no float16 kernels, so float16 runs as bfloat16 there)."""
    if cpu:
        return {"auto": "float32", "float16": "bfloat16"}.get(dtype, dtype)
    return "bfloat16" if dtype == "auto" else dtype


def vllm_args(
    model: str,
    served_names: Sequence[str],
    *,
    port: int = VLLM_PORT,
    host: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    cpu: bool = False,
    lora_modules: Sequence[LoraModule] = (),
    lora_rank: int | None = None,
    lora_capacity: LoraCapacity | None = None,
    tensor_parallel_size: int = 1,
    drain_seconds: int = 0,
    extra: Sequence[str] = (),
) -> list[str]:
    """Flags for one vLLM server. With `lora_modules` (adapters fixed at start), `lora_rank` is the
    largest adapter rank (rounded up to vLLM's allowed set) and `--max-loras` holds them all, up to 16
    at once. With `lora_capacity` (a pool that loads adapters at run time) LoRA is on and sized by it.
    `drain_seconds`: on SIGTERM, finish the requests in flight for up to this long (vLLM's default, 0,
    aborts them: a scale-in or a roll-out fails its clients' requests)."""
    if not served_names:
        raise ValueError("vllm_args: at least one served model name is needed")
    args = ["--model", model, "--served-model-name", *served_names, "--port", str(port)]
    if host:
        args += ["--host", host]
    args += ["--dtype", vllm_dtype(dtype, cpu)]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    if tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if cpu:
        args.append("--enforce-eager")
    if drain_seconds:
        args += ["--shutdown-timeout", str(drain_seconds)]
    if lora_modules:
        count = len(lora_modules)
        args += ["--enable-lora", "--lora-modules", *(m.to_json() for m in lora_modules)]
        args += ["--max-lora-rank", str(max_lora_rank(lora_rank or 1)), "--max-loras", str(min(count, MAX_LORAS_PER_BATCH))]
        if count > MAX_LORAS_PER_BATCH:
            args += ["--max-cpu-loras", str(count)]
    elif lora_capacity is not None:
        args += ["--enable-lora", "--max-lora-rank", str(max_lora_rank(lora_capacity.max_lora_rank)),
                 "--max-loras", str(lora_capacity.max_loras),
                 "--max-cpu-loras", str(max(lora_capacity.max_cpu_loras, lora_capacity.max_loras))]
    return args + list(extra)


def vllm_env(
    cpu: bool, kv_cache_gib: int = 1, tensor_parallel_size: int = 1, worker_in_engine: bool = False
) -> dict[str, str]:
    """The environment of one vLLM server beside its flags, for the cluster and the local server alike.

    `worker_in_engine` (CPU, one worker): the worker runs inside the engine-core process instead of a
    third process of its own, which imports torch and vLLM once more (about 8 of the 28 CPU seconds of
    a start, `bench/serving_bench.py --startup`) and reserves a core for the engine loop, half of a
    2-core machine. The local server (`ftctl run`, `ftctl serve`) asks for it; the operator's pods keep
    vLLM's layout (DESIGN.md §9 Serving says why). GPUs and tensor parallelism never get it."""
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    if cpu:
        env[KV_CACHE_ENV] = str(kv_cache_gib)
        if worker_in_engine and tensor_parallel_size == 1:
            env[ONE_PROCESS_ENGINE_ENV] = "0"
    return env


_NAMING_FLAGS = frozenset({"--model", "--served-model-name", "--lora-modules"})
"""What a server serves, as opposed to how its engine runs (`same_engine` replaces these, keeps the rest)."""


def same_engine(args: Sequence[str], model: str, served_names: Sequence[str]) -> list[str]:
    """The flags of a server that runs the same engine as `args` (made by `vllm_args`) but serves `model`
    as `served_names`, with no adapter named at start: every other flag stays, LoRA's (`--enable-lora`,
    `--max-lora-rank`, `--max-loras`, …) included. A canary's base arm is its tuned arm's server this way,
    so an adapter's arms pay the same per-request cost of a LoRA engine (DESIGN.md §5.4)."""
    if "--model" not in args:
        raise ValueError("same_engine: `args` name no --model (not made by vllm_args)")
    if not served_names:
        raise ValueError("same_engine: at least one served model name is needed")
    kept: list[str] = []
    skipping = False
    for arg in args:
        if arg.startswith("--"):
            skipping = arg in _NAMING_FLAGS
        if not skipping:
            kept.append(arg)
    return ["--model", model, "--served-model-name", *served_names, *kept]


BASE_SUFFIX = "-base"


def base_model_name(spec: FineTuneJobSpec, job: str) -> str:
    """The served base model's name: `spec.model.name`, or the last element of the model URI,
    lower-cased — with `-base` appended when that is the job's own name (the tuned model is served
    under the job's name, and vLLM refuses an adapter named like its base)."""
    name = spec.model.name or PurePosixPath(spec.model.uri.split("://", 1)[-1].rstrip("/")).name.lower()
    return name + BASE_SUFFIX if name == job else name


def pooled_base_name(spec: FineTuneJobSpec) -> str:
    """The base's name in an adapter pool many jobs share, so no job's own name enters it (the operator
    fails a job named like it before training: `reconcile.decide.serving_refusal`)."""
    return base_model_name(spec, job="")


MAX_MODEL_LEN_STEP = 256


def derive_max_model_len(longest_example: int, max_new_tokens: int, model_positions: int | None) -> int:
    """The longest example plus an answer, in 256-token steps, never above the model's positions
    (vLLM refuses a `--max-model-len` beyond them)."""
    length = MAX_MODEL_LEN_STEP * math.ceil((longest_example + max_new_tokens) / MAX_MODEL_LEN_STEP)
    return min(length, model_positions) if model_positions else length


def default_max_model_len(spec: FineTuneJobSpec, data: DataReport | None = None) -> int:
    """`spec.serving.maxModelLen`, else what the Validating phase derived from the model and the data
    (`status.data.maxModelLen`), else (before it ran) an estimate from `datasets.maxLength`."""
    if spec.serving.max_model_len:
        return spec.serving.max_model_len
    if data is not None and data.max_model_len:
        return data.max_model_len
    return derive_max_model_len(spec.datasets.max_length or DEFAULT_MAX_LENGTH, spec.evaluation.max_new_tokens, None)


def grader_api_key_env(grader: str) -> str:
    """The environment variable the evaluation pod gets a `score_model` grader's API key in (from its
    Secret); the operator sets it, the trainer reads it."""
    return "FT_GRADER_API_KEY_" + "".join(c if c.isalnum() else "_" for c in grader.upper())


JUDGE_ENDPOINT_ENV = "FT_JUDGE_ENDPOINT"
"""The evaluation pod's default judge (`score_model` graders without `endpoint`) on a cluster: the
namespace's adapter pool serving the base; the operator sets it, the trainer reads it."""
JUDGE_MODEL_ENV = "FT_JUDGE_MODEL"
"""The default judge's model name at `JUDGE_ENDPOINT_ENV`: the base's name in the pool (`pooled_base_name`)."""


SHADOW_TUNED_URL_ENV = "FT_SHADOW_TUNED_URL"
"""The shadow grading pod's tuned arm: its own Service's OpenAI base URL (`.../v1`); the operator sets it,
the trainer reads it. The tuned model answers there as `<job>`."""
SHADOW_BASE_URL_ENV = "FT_SHADOW_BASE_URL"
"""The shadow grading pod's base arm (`.../v1`), where the base answers under `base_model_name`."""

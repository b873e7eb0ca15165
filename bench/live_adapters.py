"""Benchmark: from a passed gate to the first answer of a new adapter, three ways, in one run.

- restart: today's static pool — a new adapter means a new vLLM server started with `--lora-modules`
  (time from the start of the process to the adapter's first chat answer);
- load API: a running pool with `VLLM_ALLOW_RUNTIME_LORA_UPDATING`; `POST /v1/load_lora_adapter` then
  the first chat answer (what the operator does on every ready replica);
- resolver: the same running pool with `VLLM_PLUGINS=lora_filesystem_resolver`; the adapter is copied
  into `$VLLM_LORA_RESOLVER_CACHE_DIR/<name>` (its `base_model_name_or_path` rewritten to the server's
  `--model`, which the resolver requires) and the first chat request loads it.

Prints one JSON object with the seconds of each path and the restart / load-API ratio. With `--many N`
it also loads N adapters into one pool that keeps only `--max-cpu-loras` of them in memory, asks each
once (all must answer) and reports the p50 latency of a request to a cold adapter (evicted, reloaded
from disk) against a warm one.

    python bench/live_adapters.py [--many 50] [--max-cpu-loras 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("FT_CACHE_DIR") or ROOT / ".cache") / "models" / "tiny-chat"
MESSAGES = [{"role": "user", "content": "Hi, my invoice river blue, please help."}]


def make_adapter(model_dir: Path, out: Path, seed: int, zero_b: bool = True) -> Path:
    """A seeded LoRA adapter: untrained (B is zero, so it answers like the base), or with `zero_b=False`
    random B as well (it changes the model, so merging it changes the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                        init_lora_weights=zero_b)
    get_peft_model(model, config).save_pretrained(out)
    return out


def first_answer(url: str, model: str) -> float:
    from finetune_trainer.serving.local import chat

    started = time.monotonic()
    chat(url, model, MESSAGES, max_tokens=4)
    return time.monotonic() - started


def bench_restart(model_dir: Path, adapter: Path) -> dict[str, Any]:
    from finetune_trainer.serving.local import LocalVllmServer

    started = time.monotonic()
    with LocalVllmServer(model_dir, "tiny-chat", adapters={"new": str(adapter)}) as server:
        server.wait_ready()
        first_answer(server.url, "new")
        return {"seconds": round(time.monotonic() - started, 2)}


def bench_runtime(model_dir: Path, adapters: list[Path], work: Path) -> dict[str, Any]:
    from finetune_api.contract.vllm import LoraCapacity
    from finetune_trainer.serving.local import LocalVllmServer

    cache = work / "resolver-cache"
    cache.mkdir()
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_PLUGINS": "lora_filesystem_resolver",
           "VLLM_LORA_RESOLVER_CACHE_DIR": str(cache)}
    capacity = LoraCapacity(max_loras=2, max_cpu_loras=4, max_lora_rank=8)
    with LocalVllmServer(model_dir, "tiny-chat", lora_capacity=capacity, env=env) as server:
        server.wait_ready()
        started = time.monotonic()
        response = httpx.post(f"{server.url}/load_lora_adapter",
                              json={"lora_name": "loaded", "lora_path": str(adapters[0])}, timeout=60)
        response.raise_for_status()
        registered = time.monotonic() - started
        first_answer(server.url, "loaded")
        load_api = time.monotonic() - started

        started = time.monotonic()
        target = cache / "resolved"
        shutil.copytree(adapters[1], target)
        config_path = target / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = str(model_dir)
        config_path.write_text(json.dumps(config))
        first_answer(server.url, "resolved")
        resolver = time.monotonic() - started
        listed = server.models()
    return {"load_api": {"register_seconds": round(registered, 3), "seconds": round(load_api, 3)},
            "resolver": {"seconds": round(resolver, 3), "listed_after_first_request": "resolved" in listed}}


def bench_many(model_dir: Path, template: Path, work: Path, count: int, max_cpu_loras: int) -> dict[str, Any]:
    """`count` adapters in one pool that holds `max_cpu_loras` in memory: every one answers; the first
    request after the others pushed it out (cold) against a repeat (warm)."""
    from finetune_api.contract.vllm import LoraCapacity
    from finetune_trainer.serving.local import LocalVllmServer

    paths = []
    for i in range(count):  # copies of one adapter: vLLM loads each from its own directory
        paths.append(work / f"many-{i}")
        shutil.copytree(template, paths[-1])
    capacity = LoraCapacity(max_loras=2, max_cpu_loras=max_cpu_loras, max_lora_rank=8)
    with LocalVllmServer(model_dir, "tiny-chat", lora_capacity=capacity,
                         env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}) as server:
        server.wait_ready()
        for i, path in enumerate(paths):
            httpx.post(f"{server.url}/load_lora_adapter", json={"lora_name": f"a{i}", "lora_path": str(path)},
                       timeout=60).raise_for_status()
        cold = [first_answer(server.url, f"a{i}") for i in range(count)]
        warm = [first_answer(server.url, f"a{count - 1}") for _ in range(5)]
    return {"adapters": count, "max_cpu_loras": max_cpu_loras, "answered": len(cold),
            "cold_p50_seconds": round(statistics.median(cold), 3), "warm_p50_seconds": round(statistics.median(warm), 3)}


def main() -> None:
    from finetune_trainer.tiny_model import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--many", type=int, default=0)
    parser.add_argument("--max-cpu-loras", type=int, default=8)
    args = parser.parse_args()
    model_dir = build_tiny_model(MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        work = Path(tmp)
        adapters = [make_adapter(model_dir, work / f"adapter-{i}", seed=i) for i in range(3)]
        runtime = bench_runtime(model_dir, adapters[:2], work)
        restart = bench_restart(model_dir, adapters[2])
        many = bench_many(model_dir, adapters[0], work, args.many, args.max_cpu_loras) if args.many else None
    result = {
        "benchmark": "live_adapters",
        "restart_to_first_answer": restart,
        **runtime,
        "restart_over_load_api": round(restart["seconds"] / runtime["load_api"]["seconds"], 1),
        **({"many_adapters": many} if many else {}),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

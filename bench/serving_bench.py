"""Benchmark: the tiny chat model served by vLLM (CPU) vs transformers `generate`, same prompts; or, with
`--adapter-vs-merged`, a LoRA adapter served on its base against the same adapter merged into the model.

Default: for each backend, seconds from start to the first generated token (server start or model
load included) and requests per second over the prompts (vLLM: concurrent requests; transformers:
one prompt at a time, and the whole set as one padded batch).

`--adapter-vs-merged` (issue 16's "throughput of an adapter against the merged model"): one vLLM CPU
server with `--enable-lora` and the adapter in `--lora-modules`, then (after it stopped) one serving the
merged model, same prompts, every request generating exactly `--max-tokens` tokens (`ignore_eos`; the
adapter's B is random, so it really changes the model): p50 latency of one request at a time, and
generated tokens/s with `--concurrency` requests in flight, with the adapter/merged ratios.

`--lora-engine` (an adapter canary's fairness, DESIGN.md §5.4): what `--enable-lora` alone costs a short
greedy answer. Two vLLM CPU servers of the base, started together: one without LoRA (an adapter canary's
base arm before both arms ran the same engine), one with the tuned arm's flags (`--enable-lora` and an
untrained adapter, B = 0, in `--lora-modules`). The same prompts, answers ending at end of sequence (as the
base answers, 2-3 tokens), one request at a time, rotating over three arms with the order reversed each
round: the base without LoRA, the base on the LoRA server (no adapter in the request: the base arm now),
the adapter (the tuned arm; it answers as the base does). p50 of each, and the ratios. Each prints one
JSON object.

    python bench/serving_bench.py [--prompts 32] [--max-tokens 16] [--concurrency 8] [--adapter-vs-merged | --lora-engine]

Figures: DESIGN.md §5 (adapter or merged), §5.4 (LoRA engine).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "models" / "tiny-chat"


def prompts(n: int) -> list[list[dict[str, str]]]:
    from finetune_trainer.tiny_model import keyword_task

    return [[m for m in row["messages"] if m["role"] != "assistant"] for row in keyword_task(n, seed=7)]


def bench_vllm(model_dir: Path, messages: list[list[dict[str, str]]], max_tokens: int, concurrency: int) -> dict[str, Any]:
    from finetune_trainer.serving.local import LocalVllmServer, chat

    started = time.monotonic()
    with LocalVllmServer(model_dir, "tiny-chat", max_model_len=256) as server:
        ready = server.wait_ready()
        chat(server.url, "tiny-chat", messages[0], max_tokens=1)
        first_token = time.monotonic() - started
        t0 = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(lambda m: chat(server.url, "tiny-chat", m, max_tokens), messages))
        elapsed = time.monotonic() - t0
    return {
        "ready_seconds": round(ready, 2),
        "start_to_first_token_seconds": round(first_token, 2),
        "requests_per_second": round(len(messages) / elapsed, 2),
        "concurrency": concurrency,
        "sample_answer": answers[0],
    }


def bench_transformers(model_dir: Path, messages: list[list[dict[str, str]]], max_tokens: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def generate(batch: list[list[dict[str, str]]], new_tokens: int) -> list[str]:
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    generate(messages[:1], 1)
    first_token = time.monotonic() - started
    t0 = time.monotonic()
    answers = [generate([m], max_tokens)[0] for m in messages]
    sequential = time.monotonic() - t0
    t0 = time.monotonic()
    generate(messages, max_tokens)
    batched = time.monotonic() - t0
    return {
        "start_to_first_token_seconds": round(first_token, 2),
        "requests_per_second": round(len(messages) / sequential, 2),
        "batched_requests_per_second": round(len(messages) / batched, 2),
        "torch_threads": torch.get_num_threads(),
        "sample_answer": answers[0],
    }


def measure_served(url: str, model: str, messages: list[list[dict[str, str]]], max_tokens: int,
                   concurrency: int) -> dict[str, Any]:
    """p50 latency one request at a time, and generated tokens/s with `concurrency` in flight."""
    import statistics

    import httpx

    def complete(m: list[dict[str, str]]) -> tuple[float, int]:
        started = time.monotonic()
        response = httpx.post(f"{url}/chat/completions", timeout=300, json={
            "model": model, "messages": m, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True})
        response.raise_for_status()
        return time.monotonic() - started, int(response.json()["usage"]["completion_tokens"])

    complete(messages[0])  # warm-up (the first LoRA request loads the adapter)
    sequential = [complete(m) for m in messages]
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        concurrent = list(pool.map(complete, messages))
    elapsed = time.monotonic() - t0
    return {
        "p50_latency_seconds": round(statistics.median(s for s, _ in sequential), 4),
        "tokens_per_second": round(sum(n for _, n in concurrent) / elapsed, 1),
        "generated_tokens": sum(n for _, n in concurrent),
    }


def bench_adapter_vs_merged(model_dir: Path, messages: list[list[dict[str, str]]], max_tokens: int,
                            concurrency: int) -> dict[str, Any]:
    import tempfile

    from finetune_trainer.serving.local import LocalVllmServer
    from finetune_trainer.train.merge import merge_adapter
    from live_adapters import make_adapter

    with tempfile.TemporaryDirectory(prefix="bench-merged-") as tmp:
        adapter = make_adapter(model_dir, Path(tmp) / "adapter", seed=0, zero_b=False)
        merged = merge_adapter(model_dir, adapter, Path(tmp) / "merged", "float32")
        with LocalVllmServer(model_dir, "tiny-chat", adapters={"ft": str(adapter)}, dtype="float32") as server:
            server.wait_ready()
            on_base = measure_served(server.url, "ft", messages, max_tokens, concurrency)
        with LocalVllmServer(merged, "ft", dtype="float32") as server:
            server.wait_ready()
            whole = measure_served(server.url, "ft", messages, max_tokens, concurrency)
    return {
        "adapter": on_base,
        "merged": whole,
        "adapter_over_merged_p50_latency": round(on_base["p50_latency_seconds"] / whole["p50_latency_seconds"], 2),
        "adapter_over_merged_tokens_per_second": round(on_base["tokens_per_second"] / whole["tokens_per_second"], 2),
    }


def bench_lora_engine(model_dir: Path, messages: list[list[dict[str, str]]], max_tokens: int) -> dict[str, Any]:
    import statistics
    import tempfile

    import httpx

    from finetune_trainer.serving.local import LocalVllmServer
    from live_adapters import make_adapter

    def complete(url: str, model: str, m: list[dict[str, str]]) -> tuple[float, int]:
        started = time.monotonic()
        response = httpx.post(f"{url}/chat/completions", timeout=300, json={
            "model": model, "messages": m, "max_tokens": max_tokens, "temperature": 0.0})
        response.raise_for_status()
        return time.monotonic() - started, int(response.json()["usage"]["completion_tokens"])

    with tempfile.TemporaryDirectory(prefix="bench-lora-engine-") as tmp:
        adapter = make_adapter(model_dir, Path(tmp) / "adapter", seed=0, zero_b=True)
        with (LocalVllmServer(model_dir, "tiny-chat", dtype="float32") as plain,
              LocalVllmServer(model_dir, "tiny-chat", adapters={"ft": str(adapter)}, dtype="float32") as lora):
            plain.wait_ready()
            lora.wait_ready()
            arms = {"base_without_lora": (plain.url, "tiny-chat"), "base_with_lora": (lora.url, "tiny-chat"),
                    "adapter": (lora.url, "ft")}
            for url, model in arms.values():
                complete(url, model, messages[0])  # warm-up (the first LoRA request loads the adapter)
            timings: dict[str, list[tuple[float, int]]] = {arm: [] for arm in arms}
            order = list(arms)
            for i, m in enumerate(messages):
                for arm in order[::-1] if i % 2 else order:
                    timings[arm].append(complete(*arms[arm], m))
    p50 = {arm: statistics.median(s for s, _ in t) for arm, t in timings.items()}
    return {
        **{arm: {"p50_latency_seconds": round(p50[arm], 4),
                 "mean_completion_tokens": round(statistics.mean(n for _, n in t), 2)} for arm, t in timings.items()},
        "base_with_over_without_lora_p50": round(p50["base_with_lora"] / p50["base_without_lora"], 2),
        "adapter_over_base_without_lora_p50": round(p50["adapter"] / p50["base_without_lora"], 2),
        "adapter_over_base_with_lora_p50": round(p50["adapter"] / p50["base_with_lora"], 2),
        "paired_median_ratios": {  # per prompt, the arms' requests of one round: less swayed by the load drifting
            f"{a}_over_{b}": round(statistics.median(x / y for (x, _), (y, _) in zip(timings[a], timings[b])), 2)
            for a, b in (("base_with_lora", "base_without_lora"), ("adapter", "base_without_lora"),
                         ("adapter", "base_with_lora"))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--adapter-vs-merged", action="store_true")
    modes.add_argument("--lora-engine", action="store_true")
    args = parser.parse_args()
    from finetune_trainer.tiny_model import build_tiny_model

    model_dir = build_tiny_model(args.model)
    messages = prompts(args.prompts)
    if args.adapter_vs_merged:
        print(json.dumps({"benchmark": "adapter_vs_merged", "model": str(model_dir), "prompts": len(messages),
                          "max_tokens": args.max_tokens, "concurrency": args.concurrency,
                          **bench_adapter_vs_merged(model_dir, messages, args.max_tokens, args.concurrency)}, indent=2))
        return
    if args.lora_engine:
        print(json.dumps({"benchmark": "lora_engine", "model": str(model_dir), "prompts": len(messages),
                          "max_tokens": args.max_tokens,
                          **bench_lora_engine(model_dir, messages, args.max_tokens)}, indent=2))
        return
    result = {
        "benchmark": "serving",
        "model": str(model_dir),
        "prompts": len(messages),
        "max_tokens": args.max_tokens,
        "vllm_cpu": bench_vllm(model_dir, messages, args.max_tokens, args.concurrency),
        "transformers": bench_transformers(model_dir, messages, args.max_tokens),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

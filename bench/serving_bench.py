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

`--startup`: what one vLLM CPU server costs from start to its first answer, as `LocalVllmServer` launches
it (`ftctl run`, the tests), in two configurations side by side — vLLM's multiprocess CPU layout (API
server, engine core, and a separate worker process) and the local server's (the worker inside the
engine core: `VLLM_ENABLE_V1_MULTIPROCESSING=0`, `vllm_env(worker_in_engine=True)`) — each on the tiny model alone and with a LoRA adapter,
alternating `--rounds` times. CPU seconds are summed over every process of the server (sampled from
/proc until `/health` answers, per process) and, for the whole start → one chat → stop, from the
rusage of the reaped process tree (this bench makes itself a child subreaper so no orphan escapes the
count).

    python bench/serving_bench.py [--prompts 32] [--max-tokens 16] [--concurrency 8] [--adapter-vs-merged | --lora-engine]
    python bench/serving_bench.py --startup [--rounds 2]

Figures: DESIGN.md §5 (adapter or merged), §5.4 (LoRA engine), §9 Serving (start-up).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("FT_CACHE_DIR") or ROOT / ".cache") / "models" / "tiny-chat"


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


STARTUP_CONFIGS: dict[str, dict[str, str]] = {
    "worker_process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
    "contract_default": {},
}
"""`worker_process` forces vLLM's own CPU layout back on; `contract_default` runs what `LocalVllmServer` sets."""
PR_SET_CHILD_SUBREAPER = 36


def process_tree_cpu(root: int, seen: dict[int, tuple[str, float]]) -> None:
    """Record the CPU seconds (user + system) of `root` and its live descendants into `seen`, by pid
    (with the process's name: vLLM titles its processes `VLLM::EngineCore`, `VLLM::Worker_…`)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (cmd if cmd.startswith("VLLM::") else raw[raw.index("(") + 1:raw.rindex(")")],
                      (int(fields[11]) + int(fields[12])) / tick)
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            seen[pid] = stats[pid]
        todo += children.get(pid, [])


def reap_orphans() -> None:
    """Wait for every descendant that was re-parented to this process, so its rusage is counted."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_startup(model_dir: Path, adapter: Path | None, env: dict[str, str]) -> dict[str, Any]:
    """Start one server, wait for `/health`, ask one chat question, stop it; its seconds and CPU seconds."""
    from finetune_trainer.serving.local import LocalVllmServer, chat

    reap_orphans()
    before = children_cpu()
    adapters = {"ft": str(adapter)} if adapter else None
    server = LocalVllmServer(model_dir, "tiny-chat", adapters=adapters, dtype="float32", env=env)
    seen: dict[int, tuple[str, float]] = {}
    ready = threading.Event()
    with server:
        assert server.process is not None
        pid = server.process.pid

        def sample() -> None:
            while not ready.wait(0.1):
                process_tree_cpu(pid, seen)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ready_seconds = server.wait_ready()
        process_tree_cpu(pid, seen)
        ready.set()
        sampler.join()
        at_ready = dict(seen)
        answer = chat(server.url, "ft" if adapter else "tiny-chat", [{"role": "user", "content": "Hi"}], max_tokens=4)
    reap_orphans()
    per_process: dict[str, float] = {}
    for name, cpu in at_ready.values():
        role = name.split("_")[0] if name.startswith("VLLM::") else "APIServer" if name.startswith("python") else name
        per_process[role] = round(per_process.get(role, 0.0) + cpu, 1)
    return {
        "ready_seconds": round(ready_seconds, 1),
        "processes": len(at_ready),
        "cpu_seconds_to_ready": round(sum(cpu for _, cpu in at_ready.values()), 1),
        "cpu_seconds_to_ready_by_process": per_process,
        "cpu_seconds_start_chat_stop": round(children_cpu() - before, 1),
        "answer": answer,
    }


def bench_startup(model_dir: Path, rounds: int) -> dict[str, Any]:
    import statistics
    import tempfile

    from live_adapters import make_adapter

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        adapter = make_adapter(model_dir, Path(tmp) / "adapter", seed=0)
        for _ in range(rounds):
            for kind, lora in (("model", None), ("adapter", adapter)):
                for config, env in STARTUP_CONFIGS.items():
                    runs.setdefault(f"{kind}/{config}", []).append(one_startup(model_dir, lora, env))
    summary = {
        key: {
            "cpu_seconds_to_ready": round(statistics.mean(r["cpu_seconds_to_ready"] for r in rs), 1),
            "cpu_seconds_start_chat_stop": round(statistics.mean(r["cpu_seconds_start_chat_stop"] for r in rs), 1),
            "ready_seconds": round(statistics.mean(r["ready_seconds"] for r in rs), 1),
        }
        for key, rs in runs.items()
    }
    return {"load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()], "summary": summary, "runs": runs}


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
    modes.add_argument("--startup", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from finetune_trainer.tiny_model import build_tiny_model

    model_dir = build_tiny_model(args.model)
    if args.startup:
        print(json.dumps({"benchmark": "vllm_startup", "model": str(model_dir), "rounds": args.rounds,
                          **bench_startup(model_dir, args.rounds)}, indent=2))
        return
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

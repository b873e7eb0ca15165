"""Benchmark: evaluation generation throughput, local vLLM CPU server vs transformers `generate`
(issue 5), on the same items, same token-id prompts, same greedy settings.

Prints one JSON object:
  items                 prompts per side (quickstart eval set, repeated to --items)
  transformers          {seconds, items_per_s} for base + tuned (adapter via disable_adapter())
  vllm                  {startup_s, seconds, items_per_s} for base + tuned on one server (LoRA side
                        by side); startup is reported apart from generation
  same_outputs          share of prompts on which both backends gave the same text (both sides)
  load_1m               the machine's load average when it finished (shared machine)

Usage: .venv/bin/python bench/eval_throughput.py [--items 120] [--adapter DIR] [--max-new-tokens 8]
Without --adapter a freshly initialised LoRA adapter (equal to the base) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "tiny-chat"))
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from finetune_trainer.evaluation.generate import (
        GenerationSettings,
        LocalServers,
        ModelPair,
        TransformersBackend,
        VllmBackend,
        encode_prompts,
        load_padded_tokenizer,
    )
    from finetune_trainer.tiny_model import build_tiny_model
    from tests.unit.trainer.adapters import untrained_adapter

    model_dir = build_tiny_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    adapter = Path(args.adapter) if args.adapter else untrained_adapter(model_dir, work / "adapter")
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "quickstart" / "eval.jsonl").read_text().splitlines()]
    prompts = [rows[i % len(rows)]["messages"][:-1] for i in range(args.items)]
    pair = ModelPair(str(model_dir), str(adapter), True, "tiny-chat", "tuned", dtype="float32")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    tokenizer = load_padded_tokenizer(pair.base_dir)
    ids = encode_prompts(tokenizer, prompts)

    outputs: dict[str, dict[str, list[str]]] = {}
    result: dict[str, object] = {"items": args.items, "max_new_tokens": args.max_new_tokens}

    hf = TransformersBackend(pair, settings, tokenizer)
    hf.generate(ids[:2], "tuned")  # load the model outside the timing
    started = time.perf_counter()
    outputs["transformers"] = {side: hf.generate(ids, side) for side in ("base", "tuned")}
    seconds = time.perf_counter() - started
    hf.close()
    result["transformers"] = {"seconds": round(seconds, 2), "items_per_s": round(2 * args.items / seconds, 2)}

    servers = LocalServers(pair, work / "logs")
    backend = VllmBackend(servers.endpoint, settings, on_close=servers.stop)
    try:
        started = time.perf_counter()
        backend.generate(ids[:2], "tuned")  # start the server outside the generation timing
        startup = time.perf_counter() - started
        started = time.perf_counter()
        outputs["vllm"] = {side: backend.generate(ids, side) for side in ("base", "tuned")}
        seconds = time.perf_counter() - started
        result["vllm"] = {"startup_s": round(startup, 1), "seconds": round(seconds, 2), "items_per_s": round(2 * args.items / seconds, 2)}
        same = sum(a == b for side in ("base", "tuned") for a, b in zip(outputs["transformers"][side], outputs["vllm"][side]))
        result["same_outputs"] = round(same / (2 * args.items), 3)
    except RuntimeError as exc:
        result["vllm"] = {"error": str(exc).splitlines()[0]}
    finally:
        backend.close()
    result["load_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

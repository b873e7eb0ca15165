"""Benchmark: the prepare phase's checks on 100k generated chat examples (issue 4; aim ≥ 20k examples/s
for reading + structural checks + dedup). The tokenization rate (chat template + loss masks with the
tiny model's tokenizer) is reported separately on a sample.

Prints one JSON object. Rates are given per wall second and per CPU second of this process: on a
shared machine the wall rate follows the load (reported), so the target is judged on CPU time, which
equals wall time on an idle machine (the checks are single-threaded). Usage: `python bench/prepare_bench.py [--rows 100000] [--tokenize-rows 20000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from finetune_trainer.data.prepare import CheckSettings, SplitSource, check_datasets
from finetune_trainer.data.rules import Findings
from finetune_trainer.data.tokenize import encode_sft, load_tokenizer
from finetune_trainer.tiny_model import build_tiny_model, is_built, keyword_example

ROOT = Path(__file__).resolve().parents[1]
TARGET_EXAMPLES_PER_SECOND = 20_000


def generate(path: Path, rows: int, duplicate_share: float = 0.02, seed: int = 0) -> None:
    """Quickstart-like rows (some multi-turn), with a share of exact duplicates for dedup to find."""
    rng = random.Random(seed)
    lines = []
    for i in range(rows):
        if lines and rng.random() < duplicate_share:
            lines.append(rng.choice(lines))
            continue
        row = keyword_example(rng)
        row["messages"][1]["content"] += f" (ticket {i})"
        if i % 5 == 0:
            row["messages"] += [{"role": "user", "content": "Are you sure?"}, {"role": "assistant", "content": "Yes."}]
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")


def main(rows: int, tokenize_rows: int) -> dict[str, object]:
    model = ROOT / ".cache" / "models" / "tiny-chat"
    with tempfile.TemporaryDirectory() as tmp:
        if not is_built(model):
            model = build_tiny_model(Path(tmp) / "tiny-chat")
        data = Path(tmp) / "train.jsonl"
        generate(data, rows)
        size = data.stat().st_size
        settings = CheckSettings(max_length=256)
        start, cpu_start = time.perf_counter(), time.process_time()
        outcome = check_datasets([SplitSource("train", str(data), "auto", "sft")], settings, None)
        structural, structural_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        train = outcome.splits["train"]
        tok = load_tokenizer(str(model))
        sample = train.examples[:tokenize_rows]
        start, cpu_start = time.perf_counter(), time.process_time()
        encoded = encode_sft(sample, tok, max_length=256, over_length="drop", loss_on="assistant", findings=Findings())
        tokenize, tokenize_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    cpu_rate = rows / structural_cpu
    return {
        "benchmark": "prepare",
        "rows": rows,
        "bytes": size,
        "load_average_1m": os.getloadavg()[0],
        "structural_and_dedup_seconds": round(structural, 3),
        "structural_and_dedup_examples_per_second": round(rows / structural),
        "structural_and_dedup_examples_per_cpu_second": round(cpu_rate),
        "target_examples_per_second": TARGET_EXAMPLES_PER_SECOND,
        "meets_target": cpu_rate >= TARGET_EXAMPLES_PER_SECOND,
        "stage_seconds": {k: round(v, 3) for k, v in outcome.timings.items()},
        "duplicates_dropped": outcome.findings.count("dropped").get("FT014", 0),
        "errors": len(outcome.findings.errors),
        "tokenized_rows": len(sample),
        "tokenize_seconds": round(tokenize, 3),
        "tokenize_examples_per_second": round(len(sample) / tokenize),
        "tokenize_examples_per_cpu_second": round(len(sample) / tokenize_cpu),
        "tokens_per_second": round(encoded.tokens / tokenize),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tokenize-rows", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(main(args.rows, args.tokenize_rows)))

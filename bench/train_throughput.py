"""Training throughput (real tokens/s) on length-skewed chat data: our trainer vs two common recipes.

- `tutorial`: tokenize with `padding="max_length"`, no packing, transformers Trainer (the usual blog recipe).
- `trl`: plain TRL SFTTrainer on the chat rows with identical settings (pads each batch to its longest row).
- `ours`: `finetune_trainer` train phase on the prepared dataset (padding-free batching chosen on skew).

All three train the same LoRA on the same rows for the same steps, side by side in one process.
Prints one JSON object with tokens/s per recipe and the ratios. Usage:
    OMP_NUM_THREADS=1 python bench/train_throughput.py [--steps 30] [--rows 256]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from finetune_api.resolved import ResolvedConfig, ResolvedPaths
from finetune_trainer.data.prepare import run_prepare
from finetune_trainer.tiny_model import build_tiny_model, keyword_task
from finetune_trainer.train.callbacks import StopOnSigterm
from finetune_trainer.train.runner import run_training

MAX_LENGTH = 384
MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models" / "tiny-chat"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def skewed_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The keyword task with one row in eight carrying a long message (real chat data's long tail)."""
    rng = random.Random(seed)
    rows = keyword_task(n, seed=seed)
    for row in rows:
        if rng.random() < 0.125:
            row["messages"][1]["content"] += " " + " ".join(rng.choice(["please", "note", "the", "order", "again"]) for _ in range(rng.randint(60, 110)))
    return rows


def common_args(out: Path, steps: int, micro: int) -> dict[str, Any]:
    return {
        "output_dir": str(out), "per_device_train_batch_size": micro, "max_steps": steps, "learning_rate": 2e-4,
        "logging_steps": steps, "save_strategy": "no", "report_to": "none", "use_cpu": True, "bf16": False,
        "gradient_checkpointing": False, "disable_tqdm": True, "seed": 0,
    }


def real_tokens(rows_ids: list[list[int]], micro: int, steps: int) -> int:
    """Non-padding tokens in the first `steps` batches of an unshuffled pass (cycled)."""
    n = steps * micro
    return sum(len(rows_ids[i % len(rows_ids)]) for i in range(n))


def bench_tutorial(model_dir: Path, rows: list[dict[str, Any]], out: Path, steps: int, micro: int) -> float:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    enc = tok(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    labels = [[t if m else -100 for t, m in zip(ids, mask)] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32), LoraConfig(**LORA))
    trainer = Trainer(model=model, args=TrainingArguments(**common_args(out, steps, micro)), train_dataset=ds, data_collator=default_data_collator)
    runtime = trainer.train().metrics["train_runtime"]
    return real_tokens([[t for t, m in zip(i, a) if m] for i, a in zip(enc["input_ids"], enc["attention_mask"])], micro, steps) / runtime


def bench_trl(model_dir: Path, rows: list[dict[str, Any]], out: Path, steps: int, micro: int) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = SFTConfig(**common_args(out, steps, micro), max_length=MAX_LENGTH, assistant_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=LoraConfig(**LORA))
    runtime = trainer.train().metrics["train_runtime"]
    ids = [tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"] for r in rows]
    return real_tokens(ids, micro, steps) / runtime


def bench_ours(model_dir: Path, rows: list[dict[str, Any]], work: Path, steps: int, micro: int) -> tuple[float, str]:
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = ResolvedConfig(
        job="bench",
        runtime="local",
        spec={
            "model": {"uri": str(model_dir), "dtype": "float32"},
            "datasets": {"train": {"uri": str(train), "format": "messages"}, "maxLength": MAX_LENGTH, "dedup": False},
            "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
            "hyperparameters": {"maxSteps": steps, "batchSize": micro, "microBatchSize": micro, "saveSteps": 10 * steps, "loggingSteps": steps},
            "resources": {"gpusPerNode": 0, "precision": "fp32"},
            "evaluation": {"enabled": False},
            "serving": {"enabled": False},
        },
        paths=ResolvedPaths(output=str(work / "out"), model=str(model_dir), train=str(train)),
    )
    assert run_prepare(config).exit_code == 0
    outcome = run_training(config, StopOnSigterm())
    record = json.loads((work / "out" / "run.json").read_text())
    return outcome.trained_tokens / outcome.metrics["train_runtime"], record["hyperparameters"]["details"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(MODEL_CACHE if MODEL_CACHE.parent.exists() else work / "tiny-chat")
        rows = skewed_rows(args.rows)
        started = time.time()
        tutorial = bench_tutorial(model_dir, rows, work / "tutorial", args.steps, args.micro_batch)
        trl = bench_trl(model_dir, rows, work / "trl", args.steps, args.micro_batch)
        ours, batching = bench_ours(model_dir, rows, work / "ours", args.steps, args.micro_batch)
    print(json.dumps({
        "benchmark": "train_throughput",
        "steps": args.steps, "rows": args.rows, "microBatch": args.micro_batch, "batching": batching,
        "tokensPerSecond": {"tutorial": round(tutorial, 1), "trl": round(trl, 1), "ours": round(ours, 1)},
        "ratioVsTutorial": round(ours / tutorial, 3), "ratioVsTrl": round(ours / trl, 3),
        "wallSeconds": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()

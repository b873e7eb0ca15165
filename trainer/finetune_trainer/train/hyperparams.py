"""Resolve the `auto` values of spec.hyperparameters into the numbers the run actually uses.

Pure functions: the same inputs give the same numbers, and `run.json` records them so a run can be
explained (and repeated) without re-deriving anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from finetune_api.job import FineTuneJobSpec

DEFAULT_GLOBAL_BATCH = 16
MAX_AUTO_SAVE_STEPS = 500


@dataclass(frozen=True)
class ResolvedHyperparameters:
    """Every optimisation number of the run, after defaults and world size are applied."""

    learning_rate: float
    global_batch_size: int
    """micro_batch_size × world_size × gradient_accumulation_steps (what is really trained per step)."""
    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    epochs: float
    max_steps: int
    """-1 when the run is driven by epochs."""
    estimated_total_steps: int
    save_steps: int
    warmup_ratio: float
    lr_scheduler: str
    weight_decay: float
    max_grad_norm: float
    seed: int
    logging_steps: int
    gradient_checkpointing: bool
    dtype: str
    """Weights dtype of the loaded model (`float32`, `bfloat16`, `float16`)."""
    precision: str
    """Mixed precision of the optimiser step: `bf16`, `fp16` or `fp32`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_learning_rate(method: str, adapter: str) -> float:
    """The documented defaults: adapters tolerate larger steps; preference/RL methods want smaller."""
    full = adapter == "full"
    if method in ("dpo", "grpo"):
        return 5e-6 if full else 5e-5
    return 2e-5 if full else 2e-4


def resolve_dtype(spec: FineTuneJobSpec, accelerator: bool) -> str:
    """`auto` → bfloat16 on accelerators, float32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    if spec.model.dtype != "auto":
        return spec.model.dtype
    return "bfloat16" if accelerator else "float32"


def resolve_precision(spec: FineTuneJobSpec, accelerator: bool) -> str:
    """`auto` → bf16 on accelerators, fp32 on CPU."""
    if spec.resources.precision != "auto":
        return spec.resources.precision
    return "bf16" if accelerator else "fp32"


def resolve_hyperparameters(
    spec: FineTuneJobSpec, world_size: int, train_examples: int, accelerator: bool = False
) -> ResolvedHyperparameters:
    """Fill in spec.hyperparameters' auto values for this world size and data size.

    The global batch is kept as close as possible to the requested one: the micro batch shrinks when
    one step would already exceed it, and gradient accumulation makes up the rest.
    """
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    if train_examples < 1:
        raise ValueError("spec.datasets.train: no usable training examples")
    hp = spec.hyperparameters
    wanted = hp.batch_size or min(DEFAULT_GLOBAL_BATCH, train_examples)
    micro = max(1, min(hp.micro_batch_size, math.ceil(wanted / world_size)))
    accumulation = max(1, round(wanted / (micro * world_size)))
    global_batch = micro * world_size * accumulation
    steps_per_epoch = max(1, math.ceil(train_examples / global_batch))
    if hp.max_steps is not None:
        max_steps, total = hp.max_steps, hp.max_steps
    else:
        max_steps, total = -1, max(1, math.ceil(steps_per_epoch * hp.epochs))
    save_steps = hp.save_steps or max(1, min(MAX_AUTO_SAVE_STEPS, math.ceil(total / 10)))
    return ResolvedHyperparameters(
        learning_rate=hp.learning_rate or auto_learning_rate(spec.method.type, spec.adapter.type),
        global_batch_size=global_batch,
        micro_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        world_size=world_size,
        epochs=hp.epochs,
        max_steps=max_steps,
        estimated_total_steps=total,
        save_steps=save_steps,
        warmup_ratio=hp.warmup_ratio,
        lr_scheduler=hp.lr_scheduler,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        seed=hp.seed,
        logging_steps=hp.logging_steps,
        gradient_checkpointing=hp.gradient_checkpointing,
        dtype=resolve_dtype(spec, accelerator),
        precision=resolve_precision(spec, accelerator),
    )

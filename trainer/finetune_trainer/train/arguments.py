"""Training arguments shared by the SFT, DPO and GRPO builders.

Every value TRL or transformers would otherwise default is set here on purpose: TRL turns on
gradient checkpointing and bf16 by default, logs every 10 steps, and transformers 5 takes the warm-up
ratio through `warmup_steps` (a value below 1 is a ratio).
"""

from __future__ import annotations

from typing import Any

import torch
from finetune_api.resolved import ArtifactLayout

from .hyperparams import ResolvedHyperparameters


def common_training_kwargs(
    hp: ResolvedHyperparameters,
    layout: ArtifactLayout,
    deepspeed: dict[str, Any] | None,
    has_eval: bool,
) -> dict[str, Any]:
    """Keyword arguments every TRL config of ours gets."""
    return {
        "output_dir": str(layout.checkpoints),
        "per_device_train_batch_size": hp.micro_batch_size,
        "per_device_eval_batch_size": hp.micro_batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "learning_rate": hp.learning_rate,
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps,
        "lr_scheduler_type": hp.lr_scheduler,
        "warmup_steps": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        "seed": hp.seed,
        "data_seed": hp.seed,
        "logging_steps": hp.logging_steps,
        "logging_strategy": "steps",
        "save_strategy": "steps",
        "save_steps": hp.save_steps,
        "save_total_limit": 3,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": hp.save_steps if has_eval else None,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "bf16": hp.precision == "bf16",
        "fp16": hp.precision == "fp16",
        "use_cpu": not torch.cuda.is_available(),
        "deepspeed": deepspeed,
        "ddp_find_unused_parameters": False,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }

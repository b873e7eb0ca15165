"""DeepSpeed ZeRO configs generated from spec.resources.deepspeed.

Batch sizes, learning rate and clipping stay `auto`: the HF Trainer fills them from the training
arguments, so there is one source for each number. ZeRO-3 gathers 16-bit weights on save, otherwise
`save_model` writes only shards that nothing downstream (merge, vLLM) can read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_api.job import FineTuneJobSpec


def deepspeed_config(spec: FineTuneJobSpec, precision: str) -> dict[str, Any] | None:
    """The ZeRO config for this spec; None when zeroStage is 0 (plain data parallel)."""
    ds = spec.resources.deepspeed
    if ds.zero_stage == 0:
        return None
    zero: dict[str, Any] = {
        "stage": ds.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.zero_stage == 3:
        zero.update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
            }
        )
        if ds.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def write_deepspeed_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write the config as JSON (for the record and for launchers that take a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return path

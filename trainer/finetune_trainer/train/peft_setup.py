"""Load the base model for LoRA, QLoRA or full fine-tuning, always with an explicit dtype.

TRL applies the `LoraConfig` we hand it (and prepares a quantized base for k-bit training); here we
decide what is loaded and how: bitsandbytes defaults (fp4, fp32 compute) are replaced by QLoRA's nf4,
bf16 compute and double quantization unless the spec says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from finetune_api.job import AdapterSpec, QuantizationSpec

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """`float32` → torch.float32 (and so on); a clear error for anything else."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"spec.model.dtype: unknown dtype {name!r} (use one of {sorted(DTYPES)})") from None


def quantization_config(adapter: AdapterSpec) -> Any | None:
    """The bitsandbytes config of a QLoRA base (None for LoRA and full)."""
    if adapter.type != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    quant = adapter.quantization or QuantizationSpec()
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quant.compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(quant.compute_dtype),
    )


def lora_config(adapter: AdapterSpec) -> Any | None:
    """The PEFT LoraConfig for lora/qlora; None for a full fine-tune."""
    if adapter.type == "full":
        return None
    from peft import LoraConfig

    targets: str | list[str] = "all-linear" if adapter.target_modules == ["all-linear"] else adapter.target_modules
    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=targets,
        modules_to_save=adapter.modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_base_model(model_dir: str | Path, adapter: AdapterSpec, dtype: str, device_map: Any = None) -> Any:
    """The base causal LM as the adapter type needs it: quantized for QLoRA, in `dtype` otherwise."""
    from transformers import AutoModelForCausalLM

    quant = quantization_config(adapter)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = device_map or ({"": "cpu"} if not torch.cuda.is_available() else None)
        if adapter.quantization is None or adapter.quantization.bits == 4:
            kwargs["dtype"] = torch_dtype((adapter.quantization or QuantizationSpec()).compute_dtype)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.config.use_cache = False
    return model

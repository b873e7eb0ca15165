"""Merge a LoRA/QLoRA adapter into its base and write a self-contained model to `merged/`.

A QLoRA adapter is merged into the base loaded unquantized (in the serving dtype): merging into
4-bit weights would round the update away. The merged directory carries the tokenizer with its chat
template and the base's generation config, so vLLM serves it as the tuned model and nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from finetune_api.contract.artifacts import artifact_ref
from finetune_api.contract.summaries import MergeSummary
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from .hyperparams import resolve_dtype
from .peft_setup import torch_dtype

ADAPTER_CONFIG = "adapter_config.json"
BASE_PATH_KEY = "finetune_base_path"


def label_adapter(adapter_dir: str | Path, served_base: str, base_path: str) -> dict[str, Any]:
    """Make the adapter name its base as served (`base_model_name_or_path`) and keep the path aside."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config.setdefault(BASE_PATH_KEY, base_path)
    config["base_model_name_or_path"] = served_base
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return config


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str) -> Path:
    """Load base (unquantized, `dtype`) + adapter, merge, and save model, tokenizer and generation config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype(dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(str(staging))
    tokenizer_source = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").exists() else base_dir
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(staging))
    if (Path(base_dir) / "generation_config.json").exists():
        GenerationConfig.from_pretrained(str(base_dir)).save_pretrained(str(staging))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def run_merge(config: ResolvedConfig) -> MergeSummary:
    """The merge phase: `merged/` (with its digest) for adapters; a full fine-tune is already a whole
    model in `model/` (its digest is in the train summary)."""
    spec = config.spec
    root = config.paths.output
    layout = ArtifactLayout(root)
    if spec.adapter.type == "full":
        return MergeSummary(merged=artifact_ref(root, layout.model), message="full fine-tune: model/ is the merged model")
    if not (layout.adapter / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"{layout.adapter}: no trained adapter to merge (did the train phase finish?)")
    dtype = resolve_dtype(spec, torch.cuda.is_available())
    out = merge_adapter(config.paths.model, layout.adapter, layout.merged, dtype)
    return MergeSummary(merged=artifact_ref(root, out, with_digest=True), dtype=dtype)

"""SFTTrainer on the prepared (already tokenized) dataset.

The prepare phase tokenized and length-checked every row, so TRL only builds labels from the masks:
`assistant_masks` (chat data, from the template's `{% generation %}` markers) or `completion_mask`
(prompt/completion data). Padding-free batching is chosen on length-skewed data when the attention
implementation isolates sequences by position ids.
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

from finetune_api.job import FineTuneJobSpec

from .parts import TrainerParts

Batching = Literal["packed", "padding_free", "padded"]
MASK_COLUMNS = ("assistant_masks", "completion_mask")
KEPT_COLUMNS = ("input_ids", "labels", *MASK_COLUMNS)
# Attention implementations whose masks honour position-id sequence boundaries (transformers masking utils).
POSITION_ID_AWARE = {"sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"}
SKEW_THRESHOLD = 1.5


def length_skew(lengths: list[int]) -> float:
    """How much a padded batch wastes: 95th-percentile length over mean length (1.0 = uniform)."""
    if not lengths:
        return 1.0
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return p95 / max(statistics.fmean(ordered), 1e-9)


def choose_batching(packing: str, lengths: list[int], attn_implementation: str | None) -> Batching:
    """`enabled` packs; `auto` goes padding-free on skewed data; both need a position-id-aware attention."""
    supported = (attn_implementation or "eager") in POSITION_ID_AWARE
    if packing == "disabled" or not supported:
        return "padded"
    if packing == "enabled":
        return "packed"
    return "padding_free" if length_skew(lengths) >= SKEW_THRESHOLD else "padded"


def input_lengths(dataset: Any) -> list[int]:
    """Every row's `input_ids` length, read from the Arrow column (rows are not converted to lists)."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def sft_dataset(dataset: Any, loss_on: str) -> Any:
    """Keep what SFTTrainer needs; `all` drops the masks so every token carries the loss."""
    keep = [c for c in dataset.column_names if c in KEPT_COLUMNS and not (loss_on == "all" and c in MASK_COLUMNS)]
    if "input_ids" not in keep:
        raise ValueError("prepared dataset has no input_ids column: run the prepare phase again")
    return dataset.select_columns(keep)


def sft_config_kwargs(spec: FineTuneJobSpec, batching: Batching) -> dict[str, Any]:
    """The SFT-specific settings (the common ones come from `arguments.common_training_kwargs`)."""
    return {
        # Pre-tokenized masks carry the assistant/completion choice; TRL's assistant_only_loss would
        # re-tokenize conversations, so it stays off and completion_mask is honoured instead.
        "assistant_only_loss": False,
        "completion_only_loss": spec.method.sft.loss_on != "all",
        "packing": batching == "packed",
        "packing_strategy": "bfd",
        "padding_free": batching in ("packed", "padding_free"),
        # prepare enforced maxLength per row; padding-free without packing must not truncate again.
        "max_length": spec.datasets.max_length if batching != "padding_free" else None,
        "neftune_noise_alpha": spec.hyperparameters.neftune_noise_alpha,
        "dataset_num_proc": None,
        "shuffle_dataset": False,
    }


def make_sft_config(spec: FineTuneJobSpec, common: dict[str, Any], train_dataset: Any, attn_implementation: str) -> tuple[Any, Batching]:
    """The SFTConfig (built before the model: ZeRO-3 must see it at load time) and its batching."""
    from trl import SFTConfig

    packing = spec.method.sft.packing
    batching = choose_batching(packing, input_lengths(train_dataset) if packing == "auto" else [], attn_implementation)
    return SFTConfig(**common, **sft_config_kwargs(spec, batching)), batching


def make_sft_trainer(parts: TrainerParts) -> Any:
    """An SFTTrainer on the prepared data, the loss on `spec.method.sft.lossOn`."""
    from trl import SFTTrainer

    loss_on = parts.spec.method.sft.loss_on
    return parts.build(
        SFTTrainer,
        train_dataset=sft_dataset(parts.train_dataset, loss_on),
        eval_dataset=sft_dataset(parts.eval_dataset, loss_on) if parts.eval_dataset is not None else None,
    )

"""DPOTrainer on the prepared preference rows (`prompt`, `chosen`, `rejected`, text or chat).

The loss terms and their weights come from the spec; the default `["sigmoid", "sft"]` keeps the
chosen answers' likelihood up, so the tuned model does not lose the accuracy SFT gave it. With an
adapter, the reference model is the base itself (adapter disabled): no second copy in memory.
"""

from __future__ import annotations

from typing import Any

from finetune_api.job import FineTuneJobSpec

from .parts import TrainerParts

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def preference_dataset(dataset: Any) -> Any:
    """Only the preference columns; a clear error when the prepared data is not preference data."""
    missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"spec.datasets.train: method dpo needs preference rows; prepared data lacks {missing}")
    return dataset.select_columns(list(PREFERENCE_COLUMNS))


def make_dpo_config(spec: FineTuneJobSpec, common: dict[str, Any], train_dataset: Any, attn_implementation: str) -> tuple[Any, dict[str, Any]]:
    """The DPOConfig: beta, loss terms and weights from spec.method.dpo, explicit max_length."""
    from trl import DPOConfig

    dpo = spec.method.dpo
    if dpo.loss_weights is not None and len(dpo.loss_weights) != len(dpo.loss_types):
        raise ValueError("spec.method.dpo.lossWeights: needs one weight per entry of lossTypes")
    args = DPOConfig(
        **common,
        beta=dpo.beta,
        loss_type=list(dpo.loss_types),
        loss_weights=list(dpo.loss_weights) if dpo.loss_weights else None,
        max_length=spec.datasets.max_length,
        precompute_ref_log_probs=False,
        dataset_num_proc=None,
    )
    return args, {"lossType": list(dpo.loss_types), "lossWeights": dpo.loss_weights, "beta": dpo.beta}


def make_dpo_trainer(parts: TrainerParts) -> Any:
    """A DPOTrainer on the preference pairs."""
    from trl import DPOTrainer

    return parts.build(
        DPOTrainer,
        train_dataset=preference_dataset(parts.train_dataset),
        eval_dataset=preference_dataset(parts.eval_dataset) if parts.eval_dataset is not None else None,
    )

"""GRPOTrainer with rewards from the evaluation graders (the same definitions score the held-out set).

No vLLM during training: completions come from transformers' `generate`. TRL's defaults (`dapo`
loss, `beta=0`) are replaced by the spec's values, which keep a KL term to the base by default.
"""

from __future__ import annotations

import math
import os
from typing import Any
from collections.abc import Callable

from finetune_api.job import FineTuneJobSpec, Grader

from .parts import TrainerParts

RewardFunction = Callable[..., list[float]]
_NOT_ITEM_FIELDS = {"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


def completion_text(completion: Any) -> str:
    """A completion as plain text: chat completions are a list of messages, the last one the answer."""
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return str(completion)


def reward_function(name: str, grade: Callable[[str, dict[str, Any]], float]) -> RewardFunction:
    """Wrap a grader `(output, item) -> score` as a TRL reward over a batch of completions.

    The item a grader sees is the dataset row (every column but the prompt), as in evaluation.
    """

    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        row_fields = {
            k: v for k, v in columns.items() if k not in _NOT_ITEM_FIELDS and isinstance(v, list) and len(v) == len(completions)
        }
        return [
            float(grade(completion_text(c), {k: values[i] for k, values in row_fields.items()}))
            for i, c in enumerate(completions)
        ]

    reward.__name__ = name
    return reward


def reward_functions(spec: FineTuneJobSpec) -> list[RewardFunction]:
    """One TRL reward per grader named in spec.method.grpo.rewards."""
    from finetune_trainer.evaluation.graders import build_reward

    if spec.method.grpo is None:
        raise ValueError("spec.method.grpo: method grpo needs method.grpo with at least one reward grader")
    graders: dict[str, Grader] = {g.name: g for g in spec.evaluation.graders}
    functions = []
    for name in spec.method.grpo.rewards:
        if name not in graders:
            raise ValueError(f"spec.method.grpo.rewards: {name!r} is not a grader in spec.evaluation.graders")
        functions.append(reward_function(name, build_reward(graders[name], spec.evaluation.graders)))
    return functions


def generation_batch_size(micro_batch: int, world_size: int, accumulation: int, num_generations: int) -> int:
    """Completions per generation round: whole prompt groups, whole per-step batches, ≈ the global batch."""
    step_batch = micro_batch * world_size
    unit = step_batch * num_generations // math.gcd(step_batch, num_generations)
    return unit * max(1, round(step_batch * accumulation / unit))


def make_grpo_config(spec: FineTuneJobSpec, common: dict[str, Any], train_dataset: Any, attn_implementation: str) -> tuple[Any, dict[str, Any]]:
    """The GRPOConfig: loss type, beta, group size, lengths and temperature from spec.method.grpo."""
    from trl import GRPOConfig

    grpo = spec.method.grpo
    if grpo is None:
        raise ValueError("spec.method.grpo: method grpo needs method.grpo with at least one reward grader")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    gen_batch = generation_batch_size(
        common["per_device_train_batch_size"], world_size, common["gradient_accumulation_steps"], grpo.num_generations
    )
    kwargs = {**common, "eval_strategy": "no", "eval_steps": None}
    args = GRPOConfig(
        **kwargs,
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        generation_batch_size=gen_batch,
        temperature=grpo.temperature,
        beta=grpo.beta,
        loss_type=grpo.loss_type,
        use_vllm=False,
        log_completions=False,
    )
    return args, {"lossType": grpo.loss_type, "beta": grpo.beta, "generationBatchSize": gen_batch}


def make_grpo_trainer(parts: TrainerParts) -> Any:
    """A GRPOTrainer rewarded by the spec's graders."""
    from trl import GRPOTrainer

    if "prompt" not in parts.train_dataset.column_names:
        raise ValueError("spec.datasets.train: method grpo needs a `prompt` per row in the prepared data")
    return parts.build(GRPOTrainer, reward_funcs=reward_functions(parts.spec), train_dataset=parts.train_dataset)

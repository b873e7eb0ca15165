"""What every method's TRL trainer is built from, in one object: the method modules (`sft`, `dpo`,
`grpo`) add only their datasets and method-specific arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune_api.job import FineTuneJobSpec


@dataclass
class TrainerParts:
    spec: FineTuneJobSpec
    args: Any
    model: Any
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any | None
    peft_config: Any | None
    callbacks: list[Any]
    wrap: Callable[[type], type] | None = None
    """`wrap(trainer_class)` may return a subclass (the runner's counts trained tokens)."""

    def build(self, trainer_class: type, **method_kwargs: Any) -> Any:
        """`trainer_class` (wrapped) with the shared arguments plus the method's own."""
        cls = self.wrap(trainer_class) if self.wrap else trainer_class
        return cls(model=self.model, args=self.args, processing_class=self.tokenizer, peft_config=self.peft_config,
                   callbacks=self.callbacks, **method_kwargs)

"""LoRA adapters for the tiny model, trained with TRL the plain way (not through our trainer), so the
evaluation and serving tests do not depend on the code they check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "data" / "quickstart"


def lora_config() -> Any:
    from peft import LoraConfig

    # vLLM refuses `modules_to_save: [lm_head]`: served adapters are LoRA-only.
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def untrained_adapter(model_dir: Path, out: Path, zero_b: bool = True) -> Path:
    """A LoRA adapter after zero training steps: peft initialises B to 0, so it equals the base; with
    `zero_b=False` B is random (seeded) too, so the adapter changes the model and merging it changes the
    weights."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = lora_config()
    config.init_lora_weights = zero_b
    get_peft_model(model, config).save_pretrained(out)
    return out


def train_adapter(model_dir: Path, out: Path, epochs: float) -> Path:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    train = load_dataset("json", data_files=str(QUICKSTART / "train.jsonl"), split="train")
    args = SFTConfig(
        output_dir=str(out / "run"), num_train_epochs=epochs, learning_rate=3e-3, per_device_train_batch_size=16,
        assistant_only_loss=True, use_cpu=True, report_to=[], save_strategy="no", logging_steps=50,
        max_length=128, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config())
    trainer.train()
    trainer.model.save_pretrained(out / "adapter")
    return out / "adapter"

"""One training attempt: resolve, load, resume from the latest checkpoint, train, save.

Runs in every process of the launch; rank 0 alone writes run.json, progress and the final tokenizer.
The caller (phases/train.py) turns the outcome into an exit code and the termination message.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch
from transformers.trainer_callback import PrinterCallback
from finetune_api.contract.artifacts import ArtifactRef, artifact_ref
from finetune_api.contract.summaries import TrainSummary
from finetune_api.resolved import ArtifactLayout, ResolvedConfig
from finetune_api.contract.vllm import base_model_name

from . import dpo, grpo, sft
from .arguments import common_training_kwargs
from .callbacks import (
    ProgressCallback,
    StopOnSigterm,
    TokenCounter,
    resumed_token_count,
    tensorboard_callback,
    with_token_counting,
)
from .checkpoint import latest_checkpoint
from .deepspeed_config import deepspeed_config, write_deepspeed_config
from .hyperparams import resolve_hyperparameters
from .merge import label_adapter
from .parts import TrainerParts
from ..evaluation.generate import load_padded_tokenizer
from .peft_setup import load_base_model, lora_config
from .run_record import build_run_record, write_run_record


@dataclass
class TrainOutcome:
    """What one attempt did; `interrupted` means SIGTERM → checkpoint → exit 143."""

    interrupted: bool
    step: int
    total_steps: int
    trained_tokens: int
    resumed_from: str | None
    output: str | None
    train_loss: float | None = None
    eval_loss: float | None = None
    weights: ArtifactRef | None = None
    checkpoint: ArtifactRef | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> TrainSummary:
        return TrainSummary(
            ok=not self.interrupted,
            interrupted=self.interrupted,
            step=self.step,
            total_steps=self.total_steps,
            train_tokens=self.trained_tokens,
            train_loss=self.train_loss,
            eval_loss=self.eval_loss,
            resumed_from=self.resumed_from,
            weights=self.weights,
            checkpoint=self.checkpoint,
            metrics=self.metrics,
        )


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (1 process when not launched)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shutdown_distributed(finished: bool) -> bool:
    """Tear the process group down together, before the interpreter exits.

    Left to interpreter finalization, Gloo's threads can abort a process whose run already saved its
    result ("terminate called without an active exception", exit -6; pytorch/pytorch#179291). After a
    finished run every rank first waits at a barrier (rank 0 may still be writing the model), so no
    rank closes its connections while a peer is busy. After a failure there is no barrier: the peers
    may be gone, and the launcher stops the rest. Returns whether a process group was torn down.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    if finished:
        dist.barrier()
    dist.destroy_process_group()
    return True


def load_splits(layout: ArtifactLayout) -> tuple[Any, Any | None, dict[str, Any]]:
    """The prepared train (and validation) datasets and the prepare phase's info (content hash)."""
    from finetune_trainer.data.prepared import load_prepared, prepared_info

    info = prepared_info(layout)
    train = load_prepared(layout, "train")
    validation = load_prepared(layout, "validation") if "validation" in info.get("splits", {}) else None
    return train, validation, info


METHODS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sft": (sft.make_sft_config, sft.make_sft_trainer),
    "dpo": (dpo.make_dpo_config, dpo.make_dpo_trainer),
    "grpo": (grpo.make_grpo_config, grpo.make_grpo_trainer),
}


def run_training(
    config: ResolvedConfig,
    stop: StopOnSigterm | None = None,
    splits: tuple[Any, Any | None, dict[str, Any]] | None = None,
) -> TrainOutcome:
    """Train (or resume) until the end or until SIGTERM; save the adapter or model at the end.

    `splits` (train, validation, info) replaces the prepared data on disk, for callers that hold it.
    """
    from finetune_trainer.data.prepared import prepared_spec

    layout = ArtifactLayout(config.paths.output)
    rank, world_size = world()
    accelerator = torch.cuda.is_available()
    train_ds, eval_ds, info = splits or load_splits(layout)
    spec = prepared_spec(config.spec, info)
    hp = resolve_hyperparameters(spec, world_size, len(train_ds), accelerator=accelerator)
    ds = deepspeed_config(spec, hp.precision)
    if rank == 0:
        layout.checkpoints.mkdir(parents=True, exist_ok=True)
        if ds is not None:
            write_deepspeed_config(ds, layout.root / "deepspeed.json")

    make_config, make_trainer = METHODS[spec.method.type]
    common = common_training_kwargs(hp, layout, ds, has_eval=eval_ds is not None)
    args, details = make_config(spec, common, train_ds, "sdpa")
    if args.world_size != world_size:  # also sets up torch.distributed: ZeRO-3 partitions weights at load time
        raise RuntimeError(f"launcher world size {world_size} but the Trainer sees {args.world_size}")
    if ds is not None and world_size > 1:
        import deepspeed

        # With use_cpu the Trainer's state leaves DeepSpeed's own comm unset, and ZeRO-3's zero.Init would
        # then size its batch check for one process; wrap the process group already set up.
        deepspeed.init_distributed(dist_backend="nccl" if accelerator else "gloo", auto_mpi_discovery=False)
    if world_size > 1:
        print(f"train: rank {rank} of {world_size} on {socket.gethostname()} joined the process group at "
              f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
              f"({torch.distributed.get_backend()})", file=sys.stderr, flush=True)
    tokenizer = load_padded_tokenizer(config.paths.model, spec.model.chat_template)
    model = load_base_model(config.paths.model, spec.adapter, hp.dtype)

    resume = latest_checkpoint(layout.checkpoints)
    counter = TokenCounter(resumed_token_count(resume))
    stop = stop or StopOnSigterm().install()
    progress = ProgressCallback(counter, layout.progress_log if rank == 0 else None)
    callbacks: list[Any] = [progress, stop]
    if spec.tracking.tensorboard and rank == 0:
        callbacks.append(tensorboard_callback(layout.tensorboard))
    trainer = make_trainer(TrainerParts(
        spec, args, model, tokenizer, train_ds, eval_ds, lora_config(spec.adapter), callbacks,
        wrap=lambda cls: with_token_counting(cls, counter),
    ))
    # stdout carries our JSON progress lines only; the Trainer's own dict printing would break them.
    trainer.remove_callback(PrinterCallback)
    record = build_run_record(
        config,
        {**hp.to_dict(), "details": details},
        data_hash=info.get("hash"),
        extra={"resumedFrom": str(resume) if resume else None, "deepspeed": ds},
    )
    if rank == 0:
        write_run_record(layout, record)

    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None) if hp.max_steps != 0 else None
    state = trainer.state
    # Every rank says how far it got: in a multi-node run this is the one line that shows each pod trained
    # in step with the others (stderr: stdout carries the progress lines only).
    print(f"train: rank {rank} of {world_size} on {socket.gethostname()}: {state.global_step} of {state.max_steps} "
          f"steps" + (f", resumed from {resume.name}" if resume else ""), file=sys.stderr, flush=True)
    outcome = TrainOutcome(
        interrupted=stop.stopped,
        step=state.global_step,
        total_steps=state.max_steps,
        trained_tokens=counter.total,
        resumed_from=str(resume) if resume else None,
        output=None,
        train_loss=float(result.training_loss) if result is not None else None,
    )
    checkpoint = latest_checkpoint(layout.checkpoints)
    outcome.checkpoint = artifact_ref(layout.root, checkpoint) if checkpoint is not None else None
    if stop.stopped:
        return outcome
    if eval_ds is not None:
        outcome.eval_loss = final_eval_loss(trainer)
    target = layout.tuned_weights(spec.adapter.type)
    trainer.save_model(str(target))
    outcome.output = str(target)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(target))
        if spec.adapter.type != "full":
            label_adapter(target, base_model_name(spec, config.job), config.paths.model)
        outcome.weights = artifact_ref(layout.root, target, with_digest=True)
        outcome.metrics = {k: float(v) for k, v in (result.metrics if result else {}).items() if isinstance(v, (int, float))}
        write_run_record(layout, {**record, "result": outcome.summary().to_wire()})
    return outcome


def final_eval_loss(trainer: Any) -> float | None:
    """The validation loss at the last step: the Trainer's own evaluation when one ran at that step
    (every `saveSteps`), else one more evaluation now (every process takes part; the progress callback
    reports it like the others)."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return float(entry["eval_loss"])
    value = trainer.evaluate().get("eval_loss")
    return float(value) if value is not None else None

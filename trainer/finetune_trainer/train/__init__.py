"""The `train` and `merge` phases: TRL trainers, PEFT, DeepSpeed, checkpoints, progress, launch."""

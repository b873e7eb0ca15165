"""finetune-trainer: what runs inside the pods (prepare, train, evaluate, merge) and locally."""

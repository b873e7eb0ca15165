"""Kopf's side of the operator: decorators and a few lines each. `indexes` (one per watched resource),
`job` (FineTuneJob and child events to the job controller), `queue` (the admission loop's start and stop).
The work happens in `finetune_operator.runtime` and the pure core below it."""

"""finetune-operator: the Kopf operator, manifest builders, queue and the `ftctl` CLI."""

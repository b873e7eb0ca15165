"""vLLM's limits and the flags the operator owns: plain constants, imported by the API models (their
admission rules) and by `vllm.py` (the arguments), so neither depends on the other."""

from __future__ import annotations

LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""`vllm.config.lora.MaxLoRARanks` of vLLM 0.32 (a unit test compares it with the installed vLLM)."""
MANAGED_FLAGS = frozenset(
    {
        "--model", "--served-model-name", "--port", "--host", "--dtype", "--max-model-len", "--enable-lora",
        "--lora-modules", "--max-lora-rank", "--max-loras", "--max-cpu-loras", "--tensor-parallel-size",
        "--enforce-eager",
    }
)
"""Flags the operator sets: probes, Services, clients and the adapter pool rely on their values."""
SHORT_FLAGS: dict[str, str] = {"-tp": "--tensor-parallel-size"}
"""vLLM 0.32's one-dash aliases of managed flags (`EngineArgs.add_cli_args`)."""
RESERVED_FLAGS: tuple[str, ...] = tuple(
    sorted(
        MANAGED_FLAGS
        | {"--no-enable-lora", "--no-enforce-eager"}  # boolean flags are BooleanOptionalActions
        | {"--config"}  # reads any flag from a YAML file
        | set(SHORT_FLAGS)
    )
)
"""Option strings `spec.serving.args` may not name. vLLM's parser turns `_` into `-` in `--` names, and
argparse also takes any unambiguous prefix (`--por=9000`), so the admission rule matches by prefix."""

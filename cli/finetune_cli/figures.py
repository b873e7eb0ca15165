"""How ftctl writes training figures: one wording for `ftctl run`'s display and `ftctl status`."""

from __future__ import annotations


def training_figures(loss: float | None, eval_loss: float | None, tokens_per_second: float | None) -> list[str]:
    """`loss 0.4321`, `val 0.5`, `812 tok/s`: the figures that are known."""
    parts = []
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if eval_loss is not None:
        parts.append(f"val {eval_loss:.4g}")
    if tokens_per_second:
        parts.append(f"{tokens_per_second:.0f} tok/s")
    return parts

"""A season-classification dataset written by the tests: a user's own data, not the quickstart's.

A short sentence names a thing of one season; the assistant answers the season. Chat rows with a
system prompt, as a new user would write them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SEASONS: dict[str, list[str]] = {
    "winter": ["snow", "frost", "ice", "sled", "scarf", "blizzard"],
    "spring": ["blossom", "tulip", "lamb", "bud", "rainbow", "nest"],
    "summer": ["beach", "sunburn", "heatwave", "swim", "sandcastle", "picnic"],
    "autumn": ["harvest", "pumpkin", "acorn", "leaves", "chestnut", "rake"],
}
SYSTEM = "Which season is it: winter, spring, summer or autumn?"


def season_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` distinct chat rows."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        label = rng.choice(sorted(SEASONS))
        when = rng.choice(["Today", "Yesterday", "This week", "Last night"])
        where = rng.choice(["lake", "house", "park", "road", "hill"])
        text = f"{when} we saw {rng.choice(SEASONS[label])} near the {where}."
        if text in seen:
            continue
        seen.add(text)
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]})
    return rows


def write_seasons(directory: Path, train: int = 96, eval_rows: int = 24) -> tuple[Path, Path]:
    """`train.jsonl` and `eval.jsonl` under `directory` (disjoint rows)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = season_rows(train + eval_rows)
    paths = directory / "train.jsonl", directory / "eval.jsonl"
    for path, part in zip(paths, (rows[:train], rows[train:]), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths

"""Trainer phases: each module exposes `main(config_path: str) -> int` (exit code per DESIGN.md §4)."""

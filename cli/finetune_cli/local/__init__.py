"""The local runtime behind `ftctl run` (DESIGN.md §7)."""

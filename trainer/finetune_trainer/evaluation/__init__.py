"""The evaluate phase: the tuned model against its base on a held-out set, decided by statistics.

`generate` produces outputs (transformers or vLLM), `metrics` and `graders` score each item, `stats`
compares base and tuned per item with a paired bootstrap, `gates` turns that into a verdict and
`report` writes `eval/report.json` and `eval/report.md`. `evaluate.run_evaluate` ties them together.
"""

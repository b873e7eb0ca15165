"""The contract between the trainer and its callers (the operator's pod builders and readers, `ftctl run`).

- `launch`: the launcher argv of the training processes; `vllm`: the vLLM server flags;
- `exit_codes`: what a phase's exit code means, and how a failure is classified;
- `termination`: the ≤ 4 KiB termination message every phase writes, and its encoding;
- `summaries`: the phase summaries (prepare, train, evaluate, merge) carried by that message;
- `progress`: the JSON progress line the trainer prints and `progress.jsonl` keeps;
- `artifacts`: the digest of an artifact directory.

Pydantic and the standard library only: both sides import it, and nothing heavy comes with it.
"""

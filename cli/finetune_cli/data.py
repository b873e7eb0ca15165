"""`ftctl data check FILE... [--format F] [--file-format F] [--split S] [--column OURS=THEIRS] [--model DIR]`:
the prepare phase's checks, locally.

Each file (JSONL, Parquet, or a dataset saved with `save_to_disk`) is checked on its own as the
method's training data (no leakage across files). Without `--model` only the structural checks run;
with it also the chat template, over-length, trainable tokens and end-of-turn checks. Every finding
prints as `file:row: rule-id: message` (a JSONL file's row is its line).
Exit 0: the data is usable; 2: it is not; 4: a file could not be read (store unreachable).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

EXIT_USABLE = 0
EXIT_NOT_USABLE = 2
EXIT_UNREADABLE = 4
FORMATS = ("auto", "messages", "prompt_completion", "preference")
FILE_FORMATS = ("auto", "jsonl", "parquet", "saved_dataset")
PURPOSES = ("sft", "dpo", "grpo", "eval")


def data_check(
    files: list[str],
    fmt: str | None = None,
    model: str | None = None,
    max_length: int = 1024,
    method: str = "sft",
    over_length: str = "drop",
    loss_on: str = "assistant",
    chat_template: str | None = None,
    out: TextIO | None = None,
    file_format: str = "auto",
    split: str | None = None,
    columns: dict[str, str] | None = None,
) -> int:
    """Check each file; print findings and a summary line per file; return the exit code."""
    from finetune_trainer.data.prepare import CheckSettings, SplitSource, check_datasets
    from finetune_trainer.data.rules import Findings
    from finetune_trainer.data.sources import SourceUnavailable
    from finetune_trainer.data.tokenize import TokenizerUnavailable, load_tokenizer, tokenizer_finding

    out = out or sys.stdout
    findings = Findings()
    tokenizer = None
    if model:
        try:
            tokenizer = load_tokenizer(model, chat_template)
        except TokenizerUnavailable as exc:
            tokenizer_finding(exc, findings)
    settings = CheckSettings(
        method="sft" if method == "eval" else method,  # type: ignore[arg-type]
        loss_on=loss_on,  # type: ignore[arg-type]
        max_length=max_length,
        over_length=over_length,  # type: ignore[arg-type]
    )
    summaries = []
    for path in files:
        source = SplitSource("train", path, fmt or "auto", method, file_format, split, columns or {})  # type: ignore[arg-type]
        try:
            outcome = check_datasets([source], settings, tokenizer, Findings())
        except SourceUnavailable as exc:
            print(f"{path}: cannot read: {exc}", file=out)
            return EXIT_UNREADABLE
        findings.extend(outcome.findings.items)
        result = outcome.splits["train"]
        errors = sum(1 for f in outcome.findings.items if f.severity == "error")
        tokens = f", {result.encoded.tokens} tokens" if result.encoded is not None else ""
        summaries.append(
            f"{path}: {result.rows} rows, {len(result.kept)} usable ({result.format or 'unknown format'}{tokens}), "
            f"{errors} errors, {len(outcome.findings.items) - errors} other findings"
        )
    for line in findings.printable():
        print(line, file=out)
    for line in summaries:
        print(line, file=out)
    usable = not findings.errors
    print("usable" if usable else "NOT usable", file=out)
    return EXIT_USABLE if usable else EXIT_NOT_USABLE


def _cmd_check(args: argparse.Namespace) -> int:
    return data_check(
        args.files,
        fmt=args.format,
        model=args.model,
        max_length=args.max_length,
        method=args.method,
        over_length=args.over_length,
        loss_on=args.loss_on,
        file_format=args.file_format,
        split=args.split,
        columns=dict(args.column),
    )


def _column(text: str) -> tuple[str, str]:
    """`OURS=THEIRS`, as `spec.datasets.*.columns` maps a field to the dataset's column."""
    from finetune_api.job import ColumnMapping

    ours, sep, theirs = text.partition("=")
    if not sep or not theirs or ours not in ColumnMapping.model_fields:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=COLUMN, FIELD one of {', '.join(ColumnMapping.model_fields)}")
    return ours, theirs


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `check` to the `ftctl data` subcommands."""
    p = subparsers.add_parser("check", help="check datasets the way the prepare phase does")
    p.add_argument("files", nargs="+", help="JSONL or Parquet files, directories of them, or saved datasets (local, pvc://, hf://)")
    p.add_argument("--format", choices=FORMATS, default="auto", help="row format (default: detect per file)")
    p.add_argument("--file-format", choices=FILE_FORMATS, default="auto", help="file format (default: detect)")
    p.add_argument("--split", help="the split of a DatasetDict saved to disk")
    p.add_argument("--column", type=_column, action="append", default=[], metavar="FIELD=COLUMN",
                   help="the dataset's column for one of our fields, e.g. prompt=question (repeatable)")
    p.add_argument("--model", help="base model directory: also check the chat template and token lengths")
    p.add_argument("--max-length", type=int, default=1024, help="datasets.maxLength (default 1024)")
    p.add_argument("--method", choices=PURPOSES, default="sft", help="what the data is for (default sft)")
    p.add_argument("--over-length", choices=("drop", "truncate", "fail"), default="drop")
    p.add_argument("--loss-on", choices=("assistant", "completion", "all"), default="assistant")
    p.set_defaults(func=_cmd_check)
    return p

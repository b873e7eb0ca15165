"""The evaluation items: prompt, reference and the row's fields for graders.

The held-out set comes from the prepared `eval` split when prepare wrote one (leakage already
removed), else straight from its files (eval set, or the validation set). The regression set is
always read from its files. Rows are checked with the same rules as in prepare, so a bad row is
reported with its file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finetune_api.job import DatasetRef
from finetune_api.resolved import ArtifactLayout, ResolvedConfig

from ..data.formats import parse_file
from ..data.rules import Findings
from ..data.sources import MissingData, column_mapping, read_dataset


class EvalDataError(ValueError):
    """The eval data is missing or malformed (a user error)."""


@dataclass(frozen=True)
class EvalItem:
    prompt: list[dict[str, Any]]
    reference: str
    fields: dict[str, Any]
    """What graders see as `item`: the row's fields and `reference`."""
    origin: str = ""
    """`file:line` of the row, when known."""


def _item(prompt: list[dict[str, Any]], reference: str, row: dict[str, Any], origin: str) -> EvalItem:
    return EvalItem(prompt, reference, {**row, "reference": reference}, origin)


def read_items(uri: str, ref: DatasetRef) -> list[EvalItem]:
    """Rows of the dataset `ref` describes, read from `uri`, as eval items; EvalDataError names the
    first bad row."""
    try:
        sources = read_dataset(uri, ref.file_format, ref.split)
    except MissingData as exc:
        raise EvalDataError(str(exc)) from exc
    findings = Findings()
    items: list[EvalItem] = []
    columns = column_mapping(ref)
    for source in sources:
        examples, _, _ = parse_file(source, ref.format, "eval", findings, columns)
        items += [_item(ex.prompt, ex.reference, ex.raw or {}, f"{ex.file}:{ex.line}") for ex in examples]
    if findings.errors:
        first = findings.errors[0]
        raise EvalDataError(f"{len(findings.errors)} bad eval rows; first: {first.file}:{first.line}: {first.message}")
    if not items:
        raise EvalDataError(f"{uri}: no eval rows")
    return items


def held_out_items(config: ResolvedConfig) -> tuple[list[EvalItem], str]:
    """The held-out items (at most `maxItems`) and where they came from."""
    from ..data.prepared import load_prepared

    limit = config.spec.evaluation.max_items
    try:
        split = load_prepared(ArtifactLayout(config.paths.output), "eval")
    except (FileNotFoundError, KeyError):
        split = None
    if split is not None and len(split):
        rows = split.select(range(min(limit or len(split), len(split))))
        items = [_item(r["prompt"], r["reference"], json.loads(r["row"]), f"prepared eval #{i}") for i, r in enumerate(rows)]
        return items, "prepared eval split"
    data = config.spec.datasets
    if config.paths.eval and data.eval is not None:
        uri, ref = config.paths.eval, data.eval
    elif config.paths.validation and data.validation is not None:
        uri, ref = config.paths.validation, data.validation
    else:
        raise EvalDataError("spec.datasets.eval: no eval (or validation) set to evaluate on")
    return read_items(uri, ref)[:limit], uri


def regression_items(config: ResolvedConfig) -> list[EvalItem] | None:
    ref = config.spec.evaluation.regression
    if ref is None or not config.paths.regression:
        return None
    return read_items(config.paths.regression, ref)[: config.spec.evaluation.max_items]

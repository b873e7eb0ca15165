"""Admitted means buildable: every spec the schema and the CEL rules admit renders, with a ConfigMap the
API server accepts; and the render failures the old rules let through are refused by `ftctl validate`."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from pydantic import ValidationError

from finetune_api import FineTuneJob
from finetune_cli.admission import cel_errors
from finetune_cli.manifests import validate_document
from finetune_operator.builders.config_map import CONFIG_MAP_LIMIT
from finetune_operator.builders.render import render_job
from finetune_operator.settings import OperatorSettings
from tests.unit.api.spec_strategies import job_documents

pytestmark = pytest.mark.unit


def admitted(doc: dict[str, Any]) -> FineTuneJob | None:
    """The job when the schema and the CEL rules admit `doc` (the API server's verdict), else None."""
    try:
        job = FineTuneJob.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError:
        return None
    return None if cel_errors("FineTuneJob", job.to_api()) else job


def render(job: FineTuneJob) -> dict[str, list[dict[str, Any]]]:
    job = job.model_copy(deep=True)
    job.metadata.namespace = "default"
    return render_job(job, OperatorSettings())


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(job_documents())
def test_every_admitted_spec_renders_with_a_config_map_under_its_limit(doc: dict[str, Any]) -> None:
    job = admitted(doc)
    assume(job is not None)
    phases = render(job)
    config_map = phases["prepare"][0]
    assert len(json.dumps(config_map["data"]).encode()) < CONFIG_MAP_LIMIT
    assert validate_document(doc, "generated").ok


STOCK = {
    "apiVersion": "finetune.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "stock"},
    "spec": {"model": {"uri": "pvc://models/base"}, "datasets": {"train": {"uri": "pvc://data/train.jsonl"}}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(STOCK)
    node = doc
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return doc


def _python_grader(i: int) -> dict[str, Any]:
    return {"name": f"g{i}", "type": "python", "source": "def grade(output, item):\n    return 1.0\n# " + '"' * 65000}


OLD_RENDER_FAILURES = {
    "lora rank 1024 served as an adapter": (_with("spec.adapter", {"r": 1024}), "spec.adapter.r"),
    "--port in serving.args": (_with("spec.serving", {"args": ["--port=9000"]}), "spec.serving.args"),
    "cpu 1.2.3": (_with("spec.resources", {"cpu": "1.2.3"}), "spec.resources.cpu"),
    "16 graders past 1 MiB": (
        _with("spec.evaluation", {"graders": [_python_grader(i) for i in range(16)]}),
        "spec.evaluation.graders",
    ),
    "a name with a dot": (_with("metadata.name", "my.job"), "metadata.name"),
}


@pytest.mark.parametrize("case", list(OLD_RENDER_FAILURES), ids=lambda c: c.replace(" ", "-"))
def test_specs_the_old_rules_admitted_but_could_not_render_are_refused(case: str) -> None:
    doc, field = OLD_RENDER_FAILURES[case]
    verdict = validate_document(doc, case)
    assert not verdict.ok
    assert any(e.startswith(field) for e in verdict.errors), verdict.errors


def test_the_large_grader_spec_is_admitted_by_the_rules_and_refused_by_the_builder() -> None:
    """The ConfigMap limit is the builder's rule: the spec passes the schema and CEL, not the render."""
    doc, _ = OLD_RENDER_FAILURES["16 graders past 1 MiB"]
    job = admitted(doc)
    assert job is not None
    with pytest.raises(ValueError, match=r"^spec\.evaluation\.graders: .*1 MiB"):
        render(job)

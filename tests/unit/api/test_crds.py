"""The CRDs are generated from the models: no drift, structural, and they accept every example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from finetune_api.crdgen import all_crds
from finetune_cli.admission import compile_rule
from finetune_cli.crds import render_crds

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("directory", ["crds", "charts/finetune-operator/crds"])
def test_committed_crds_match_the_models(directory: str) -> None:
    for name, text in render_crds().items():
        path = ROOT / directory / name
        assert path.exists(), f"{path} missing: run `ftctl crds`"
        assert path.read_text() == text, f"{path} drifted from the models: run `ftctl crds`"


def _walk(node: dict, path: str):
    yield path, node
    for prop, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{prop}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("crd", list(all_crds().values()), ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural(crd: dict) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema, "root"):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "const", "nullable"):
            assert forbidden not in node, f"{path} uses {forbidden}"
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path} has no type"
        if path.startswith("root.spec") and path.count(".") > 1 and path != "root.spec":
            assert node.get("description") or path.endswith("[]") or path.endswith("{}"), f"{path} has no description"


def test_job_crd_has_columns_short_names_and_status() -> None:
    crd = all_crds()["finetune.dev_finetunejobs.yaml"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    names = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert names == ["Phase", "Progress", "Eval", "Endpoint", "Canary", "Tuned%", "Age"]


def _validator(kind: str) -> jsonschema.Draft4Validator:
    crd = all_crds()[f"finetune.dev_{kind.lower()}s.yaml"]
    return jsonschema.Draft4Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_generated_crd(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        errors = [e.message for e in _validator(doc["kind"]).iter_errors(doc)]
        assert errors == []


def test_cel_rules_are_in_the_schema() -> None:
    text = render_crds()["finetune.dev_finetunejobs.yaml"]
    for message in ("method dpo needs a preference dataset", "more than one node needs gpusPerNode", "is immutable"):
        assert message in text


def _rules(node: dict):
    for _, sub in _walk(node, "root"):
        yield from (r["rule"] for r in sub.get("x-kubernetes-validations", []))


@pytest.mark.parametrize("crd", list(all_crds().values()), ids=lambda c: c["metadata"]["name"])
def test_every_cel_rule_compiles_in_the_offline_evaluator(crd: dict) -> None:
    """`ftctl validate` runs the CRD's own CEL text; a rule only the API server understands would fail here."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = list(_rules(schema))
    assert rules
    for rule in rules:
        compile_rule(rule)


def test_operator_source_root_does_not_shadow_the_stdlib() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "finetune" not in out.stdout and out.stdout.strip().endswith("operator.py")

"""Every admission rule proven twice: the invalid corpus is refused by the real kube-apiserver (server-side
dry-run create of the generated CRDs) AND by `ftctl validate`, both naming the same field; the examples
are accepted by both; and generated specs that are admitted render into objects the API server accepts."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings

from finetune_cli.manifests import validate_files
from finetune_operator.builders.render import render_job
from finetune_operator.settings import OperatorSettings
from tests.unit.api.spec_strategies import job_documents
from tests.unit.api.test_admitted_is_buildable import admitted
from tests.unit.cli.test_validate import INVALID, expected_field, expected_message

pytestmark = pytest.mark.api
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def objects_api(cluster):
    from kubernetes import client

    api = client.CustomObjectsApi(cluster.api_client())
    namespace = cluster.create_namespace(f"admission-{uuid.uuid4().hex[:5]}")
    yield api, namespace
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def dry_run_create(objects_api, doc: dict) -> list[tuple[str, str]]:
    """(field, message) of every cause the API server gives for refusing `doc`; [] when admitted."""
    from kubernetes.client.exceptions import ApiException

    api, namespace = objects_api
    plural = doc["kind"].lower() + "s"
    kwargs = {"dry_run": "All", "field_validation": "Strict"}
    try:
        if doc["kind"] == "FineTuneQueue":
            api.create_cluster_custom_object("finetune.dev", "v1alpha1", plural, doc, **kwargs)
        else:
            doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            api.create_namespaced_custom_object("finetune.dev", "v1alpha1", namespace, plural, doc, **kwargs)
    except ApiException as exc:
        assert exc.status in (400, 422), exc.body
        status = json.loads(exc.body)
        causes = (status.get("details") or {}).get("causes") or []
        return [(c.get("field", ""), c.get("message", "")) for c in causes] or [("", status["message"])]
    return []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_the_api_server_and_ftctl_validate_refuse_naming_the_same_field(objects_api, path: Path) -> None:
    field, message = expected_field(path), expected_message(path)
    causes = dry_run_create(objects_api, yaml.safe_load(path.read_text()))
    server = [m for f, m in causes if f.startswith(field) or f'"{field}' in m]
    assert server, f"API server: expected a cause on {field}, got {causes}"
    assert any(message in m for m in server), f"API server: no cause on {field} says {message!r}: {causes}"

    (verdict,) = validate_files([path])
    offline = [e for e in verdict.errors if e.startswith(field)]
    assert offline, f"ftctl validate: expected an error on {field}, got {verdict.errors}"
    assert any(message in e for e in offline), verdict.errors


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_admitted_by_both(objects_api, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert dry_run_create(objects_api, doc) == []
    assert all(v.ok for v in validate_files([path])), [v.errors for v in validate_files([path])]


@settings(max_examples=int(os.environ.get("FT_PROPERTY_EXAMPLES", "50")), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(doc=job_documents())
def test_every_admitted_spec_and_every_child_it_renders_pass_the_api_servers_validation(cluster, objects_api, doc) -> None:
    """Generated specs that `ftctl validate` admits are admitted by the API server, and so is every object
    the operator builds for them (names, quantities, label values, volumes): server-side dry-run."""
    job = admitted(doc)
    assume(job is not None)
    _, namespace = objects_api
    job.metadata.namespace = namespace
    children = [obj for objects in render_job(job, OperatorSettings()).values() for obj in objects]
    items = [{**doc, "metadata": {**doc["metadata"], "namespace": namespace}}, *children]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})  # JSON: no YAML 1.1 `n` → false
    out = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert out.returncode == 0, f"{out.stderr}\n--- spec:\n{yaml.safe_dump(doc)}"
    assert out.stdout.count("(server dry run)") == len(children) + 1, out.stdout

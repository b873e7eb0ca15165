"""The Argo CD health check (deploy/argocd/health-finetunejob.lua) under Lua 5.1, the dialect of Argo's
gopher-lua, against a status of every phase the API defines."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from lupa import lua51

from finetune_api.job import FineTuneJobStatus, Phase

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "argocd" / "health-finetunejob.lua"

EXPECTED: dict[str, str] = {
    "Pending": "Progressing",
    "Validating": "Progressing",
    "Queued": "Suspended",
    "Training": "Progressing",
    "Evaluating": "Progressing",
    "Uploading": "Progressing",
    "Deploying": "Progressing",
    "Serving": "Healthy",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
    "Rejected": "Degraded",
}


def health(obj: dict) -> dict[str, str]:
    """Run the script as Argo does: a global `obj`, a returned table `hs`."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(SCRIPT.read_text())
    return {key: result[key] for key in ("status", "message")}


def _to_lua(lua: lua51.LuaRuntime, value: object) -> object:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def job(status: dict | None, generation: int = 1) -> dict:
    obj = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": "demo", "namespace": "ml", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def status_for(phase: str) -> dict:
    """A status the operator could write in `phase` (built through the API model: camelCase, typed)."""
    fields: dict = {"phase": phase, "observedGeneration": 1}
    if phase == "Training":
        fields["progress"] = {"step": 40, "totalSteps": 100, "summary": "40/100 loss 1.23"}
    if phase == "Queued":
        fields["queue"] = {"name": "research", "position": 3, "message": "needs 8 nvidia.com/gpu"}
    if phase in {"Serving", "Succeeded", "Rejected"}:
        fields["evaluation"] = {"passed": phase != "Rejected", "score": "exact_match 0.91 (base 0.20)"}
    if phase == "Serving":
        fields["serving"] = {"endpoint": "http://demo-serve.ml.svc:8000/v1", "readyReplicas": 1}
    if phase == "Failed":
        fields.update(reason="UserError", message="datasets.train line 17: no assistant turn")
    return FineTuneJobStatus.model_validate(fields).to_api()


def test_every_phase_of_the_api_has_an_expectation() -> None:
    assert set(EXPECTED) == set(typing.get_args(Phase))


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_each_phase_maps_to_its_argo_status(phase: str) -> None:
    hs = health(job(status_for(phase)))
    assert hs["status"] == EXPECTED[phase]
    assert hs["message"]


def test_messages_carry_the_useful_detail() -> None:
    assert health(job(status_for("Training")))["message"] == "Training: 40/100 loss 1.23"
    assert health(job(status_for("Queued")))["message"] == (
        "Waiting for admission in research at position 3: needs 8 nvidia.com/gpu")
    assert "line 17" in health(job(status_for("Failed")))["message"]
    assert "exact_match 0.91" in health(job(status_for("Rejected")))["message"]
    assert health(job(status_for("Serving")))["message"] == "Serving at http://demo-serve.ml.svc:8000/v1"


def test_no_status_yet_is_progressing() -> None:
    assert health(job(None))["status"] == "Progressing"
    assert health(job({}))["status"] == "Progressing"


def test_a_new_generation_not_yet_observed_is_progressing_even_if_the_old_one_succeeded() -> None:
    hs = health(job(status_for("Succeeded"), generation=2))
    assert hs == {"status": "Progressing", "message": "Waiting for the operator to observe generation 2"}


def test_serving_without_a_ready_replica_is_degraded() -> None:
    status = status_for("Serving")
    status["serving"]["readyReplicas"] = 0
    assert health(job(status))["status"] == "Degraded"


def test_an_unknown_phase_is_unknown_not_healthy() -> None:
    assert health(job({"phase": "Exploding", "observedGeneration": 1}))["status"] == "Unknown"

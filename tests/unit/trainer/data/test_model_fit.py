"""Model-aware checks of the Validating phase: a spec that does not fit its base model is refused
before any GPU (naming the field), and unset lengths are derived from the model and the data.

The base is the tiny chat model (512 positions, below the default maxLength of 1024); the data is a
season-classification set the tests write, with a stock manifest (defaults everywhere).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_api.contract.vllm import default_max_model_len, derive_max_model_len
from finetune_api.resolved import ArtifactLayout, ResolvedConfig, ResolvedPaths
from finetune_operator.builders import build_serving_objects
from finetune_operator.reconcile import JobState, ObservedChildren, PatchStatus, PodState, decide
from finetune_operator.settings import OperatorSettings
from finetune_trainer.data import prepared_info
from finetune_trainer.data.model_fit import PositionLimit, model_position_limit, position_limit
from finetune_api.contract.exit_codes import OK as EXIT_OK, USER_ERROR as EXIT_USER_ERROR
from finetune_trainer.data.prepare import run_prepare
from finetune_trainer.data.prepared import prepared_spec
from finetune_trainer.data.rules import Findings
from finetune_trainer.evaluation.generate import resolve_models
from finetune_trainer.phases.prepare import main as prepare_main
from finetune_trainer.tiny_model import CHAT_TEMPLATE
from tests.harness.seasons import write_seasons

pytestmark = pytest.mark.unit
NOW = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
POSITIONS = "the base model's 512 positions (config.json max_position_embeddings)"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def stock_config(tmp_path: Path, model_dir: Path, **spec: Any) -> ResolvedConfig:
    """A manifest that names only the model and the data (plus `spec` overrides), resolved locally."""
    train, held_out = write_seasons(tmp_path / "data")
    body = merge({"model": {"uri": str(model_dir)}, "datasets": {"train": {"uri": str(train)}, "eval": {"uri": str(held_out)}}}, spec)
    job = FineTuneJob.model_validate({"metadata": {"name": "seasons"}, "spec": body})
    paths = ResolvedPaths(output=str(tmp_path / "out"), model=str(model_dir), train=str(train), eval=str(held_out))
    return ResolvedConfig(job="seasons", spec=job.spec, paths=paths, served_model_name="seasons")


def rule_ids(result: Any, severity: str = "error") -> list[str]:
    return [f.rule.id for f in result.findings.items if f.severity == severity]


def model_copy(tiny_model_dir: Path, target: Path) -> Path:
    """The tiny model's config and tokenizer files (no weights: prepare does not load them)."""
    shutil.copytree(tiny_model_dir, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return target


# -- lengths: defaults lowered, explicit values refused -------------------------------------------------

def test_stock_manifest_lowers_the_default_lengths_to_the_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = stock_config(tmp_path, tiny_model_dir)
    result = run_prepare(config)
    assert result.exit_code == EXIT_OK, result.findings.printable()
    assert rule_ids(result, "warning") == ["FT021"]
    warning = result.findings.warnings[0].message
    assert warning == f"spec.datasets.maxLength is unset: using {POSITIONS} instead of the default 1024"

    data = result.termination().data
    assert data is not None
    assert data.model_max_positions == 512 and data.max_length == 512
    assert 0 < data.longest_example < 128
    assert data.max_model_len == derive_max_model_len(data.longest_example, 64, 512) == 256
    assert "maxLength 512, maxModelLen 256 (the base model takes 512 positions)" in data.message

    layout = ArtifactLayout(config.paths.output)
    report = json.loads(layout.data_report.read_text())
    assert report["model"]["positions_source"] == "config.json max_position_embeddings"
    assert "| datasets.maxLength | 512 | default |" in layout.data_report.with_suffix(".md").read_text()
    # what the later phases read: training truncates at 512, evaluation and serving use 256
    info = prepared_info(layout)
    assert info["settings"]["max_length"] == 512
    assert prepared_spec(config.spec, info).datasets.max_length == 512
    assert resolve_models(config, need_tuned=False).max_model_len == 256


def test_explicit_max_length_beyond_the_positions_is_refused_naming_the_field(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = run_prepare(stock_config(tmp_path, tiny_model_dir, datasets={"maxLength": 1024}))
    assert result.exit_code == EXIT_USER_ERROR and rule_ids(result) == ["FT021"]
    assert f"spec.datasets.maxLength: 1024 exceeds {POSITIONS}" in (result.termination().message or "")
    assert not (ArtifactLayout(tmp_path / "out").data / "prepared.json").exists()


def test_explicit_max_model_len_beyond_the_positions_is_refused_naming_the_field(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = run_prepare(stock_config(tmp_path, tiny_model_dir, serving={"maxModelLen": 1280}))
    assert result.exit_code == EXIT_USER_ERROR and rule_ids(result) == ["FT021"]
    assert f"spec.serving.maxModelLen: 1280 exceeds {POSITIONS}" in (result.termination().message or "")


def test_values_within_the_positions_are_used_as_given(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = run_prepare(stock_config(tmp_path, tiny_model_dir, datasets={"maxLength": 512}, serving={"maxModelLen": 384}))
    assert result.exit_code == EXIT_OK and rule_ids(result, "warning") == []
    data = result.summary
    assert (data.max_length, data.max_model_len) == (512, 384)


# -- chat template, EOS ----------------------------------------------------------------------

def test_chat_data_without_a_chat_template_is_refused_once_naming_the_field(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = model_copy(tiny_model_dir, tmp_path / "no-template")
    (model / "chat_template.jinja").unlink()
    result = run_prepare(stock_config(tmp_path, model, method={"sft": {"lossOn": "assistant"}}))
    assert result.exit_code == EXIT_USER_ERROR
    assert rule_ids(result) == ["FT023"], result.findings.printable()  # one finding, not one per row
    error = (result.termination().message or "")
    assert "spec.model.chatTemplate: the base model's tokenizer has no chat template" in error
    assert "the training data is chat messages" in error and "evaluation renders its prompts" in error
    fixed = run_prepare(stock_config(tmp_path / "fixed", model, model={"chatTemplate": CHAT_TEMPLATE}))
    assert fixed.exit_code == EXIT_OK, fixed.findings.printable()


def test_a_tokenizer_without_an_eos_token_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = model_copy(tiny_model_dir, tmp_path / "no-eos")
    for name, key in (("tokenizer_config.json", "eos_token"), ("generation_config.json", "eos_token_id")):
        settings = json.loads((model / name).read_text())
        del settings[key]
        (model / name).write_text(json.dumps(settings))
    result = run_prepare(stock_config(tmp_path, model))
    assert result.exit_code == EXIT_USER_ERROR and rule_ids(result) == ["FT024"]
    assert "the base model's tokenizer has no end-of-sequence token" in (result.termination().message or "")


def test_a_model_directory_without_config_json_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = model_copy(tiny_model_dir, tmp_path / "no-config")
    (model / "config.json").unlink()
    result = run_prepare(stock_config(tmp_path, model))
    assert result.exit_code == EXIT_USER_ERROR and rule_ids(result) == ["FT025"]


# -- where vLLM finds a model's positions ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("config", "tokenizer", "limit"),
    [
        ({"max_position_embeddings": 4096}, None, PositionLimit(4096, "config.json max_position_embeddings")),
        ({"n_positions": 1024, "n_ctx": 1024}, None, PositionLimit(1024, "config.json n_positions")),
        ({"max_sequence_length": 2048, "max_position_embeddings": 4096}, None, PositionLimit(2048, "config.json max_sequence_length")),
        ({"text_config": {"max_position_embeddings": 8192}}, None, PositionLimit(8192, "config.json max_position_embeddings")),
        ({"max_position_embeddings": 2048, "rope_scaling": {"type": "linear", "factor": 2.0}}, None,
         PositionLimit(4096, "config.json max_position_embeddings × RoPE factor 2")),
        ({"max_position_embeddings": 131072, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, None,
         PositionLimit(131072, "config.json max_position_embeddings")),
        ({"max_position_embeddings": 4096}, {"model_max_length": 2048}, PositionLimit(2048, "tokenizer_config.json model_max_length")),
        ({"max_position_embeddings": 4096}, {"model_max_length": int(1e30)}, PositionLimit(4096, "config.json max_position_embeddings")),
        ({"sliding_window": 4096}, None, None),
    ],
)
def test_position_limit_follows_vllm(config: dict[str, Any], tokenizer: dict[str, Any] | None, limit: PositionLimit | None) -> None:
    assert position_limit(config, tokenizer) == limit


def test_keys_the_config_file_omits_take_the_architecture_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    findings = Findings()
    assert model_position_limit(str(tmp_path), findings) == PositionLimit(2048, "config.json max_position_embeddings")
    assert not findings.items


# -- the operator reads the prepare phase's termination message ------------------------------------------

def operator_job(status: dict[str, Any] | None = None) -> FineTuneJob:
    """The same stock manifest as the cluster sees it (PVC URIs), at Validating."""
    body = {
        "metadata": {"name": "seasons", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": {"model": {"uri": "pvc://models/tiny-chat"}, "datasets": {"train": {"uri": "pvc://data/train.jsonl"}}},
        "status": status or {"phase": "Validating", "phaseStartedAt": "2030-01-01T11:00:00Z", "observedGeneration": 1},
    }
    return FineTuneJob.model_validate(body)


def prepare_job(exit_code: int, termination: str) -> ObservedChildren:
    pod = PodState("seasons-prepare-x", "Succeeded" if exit_code == 0 else "Failed", exit_code, termination)
    state = JobState("seasons-prepare", "succeeded" if exit_code == 0 else "failed", pods=(pod,))
    return ObservedChildren(jobs={state.name: state})


def run_prepare_phase(config: ResolvedConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`python -m finetune_trainer prepare` as the pod runs it: (exit code, termination message)."""
    config_path, log = tmp_path / "config.json", tmp_path / "termination-log"
    config_path.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    monkeypatch.setenv("FT_TERMINATION_LOG", str(log))
    return prepare_main(str(config_path)), log.read_text()


def status_patch(actions: list[Any]) -> dict[str, Any]:
    return next(a.patch for a in actions if isinstance(a, PatchStatus))


def test_the_operator_serves_with_the_derived_max_model_len(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, termination = run_prepare_phase(stock_config(tmp_path, tiny_model_dir), tmp_path, monkeypatch)
    assert code == EXIT_OK
    patch = status_patch(decide(operator_job(), prepare_job(0, termination), NOW, OperatorSettings()))
    assert patch["data"]["maxModelLen"] == 256 and patch["data"]["modelMaxPositions"] == 512
    validated = operator_job({**operator_job().status.to_api(), **patch})  # type: ignore[union-attr]
    serving = validated.spec.serving.model_copy(update={"mode": "merged"})
    merged = validated.model_copy(update={"spec": validated.spec.model_copy(update={"serving": serving})})
    deployment = build_serving_objects(merged, OperatorSettings())[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "256"
    # a shared adapter pool is sized by the admin (jobs.adapterPool.maxModelLen), never by one job's data
    pool = build_serving_objects(validated, OperatorSettings())[0]
    assert "--max-model-len" not in pool["spec"]["template"]["spec"]["containers"][0]["args"]
    # before the Validating phase ran (e.g. `ftctl render`) the estimate comes from the spec alone
    assert default_max_model_len(operator_job().spec) == 1280


def test_a_refused_spec_fails_the_job_with_the_field_in_status(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = stock_config(tmp_path, tiny_model_dir, datasets={"maxLength": 1024})
    code, termination = run_prepare_phase(config, tmp_path, monkeypatch)
    assert code == EXIT_USER_ERROR
    patch = status_patch(decide(operator_job(), prepare_job(code, termination), NOW, OperatorSettings()))
    assert patch["phase"] == "Failed" and patch["reason"] == "ValidationFailed"
    assert f"spec.datasets.maxLength: 1024 exceeds {POSITIONS}" in patch["message"]

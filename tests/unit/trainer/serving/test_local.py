"""A real vLLM CPU server serves the tuned tiny model merged and as base + LoRA adapter, chosen from a
run's artifacts the way `ftctl serve` chooses: on a held-out prompt it gives the learned answer, and the
base (served next to the adapter) answers as transformers does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_api import FineTuneJob
from finetune_api.resolved import ArtifactLayout, ResolvedConfig, ResolvedPaths
from finetune_trainer.serving.local import (
    LocalVllmServer,
    adapter_rank,
    chat,
    load_run,
    serve_artifacts,
    serve_local_run,
    server_for_run,
)

pytestmark = [pytest.mark.unit]

JOB = "tiny-ft"
BASE = "tiny-chat"
HELD_OUT = json.loads((Path(__file__).resolve().parents[4] / "examples/data/quickstart/eval.jsonl").open().readline())
QUESTION = HELD_OUT["messages"][:-1]
LEARNED = HELD_OUT["messages"][-1]["content"]
MAX_TOKENS = 8


def _config(model_dir: str, output: str, deadlines: dict[str, int] | None = None) -> ResolvedConfig:
    job = FineTuneJob.model_validate(
        {
            "metadata": {"name": JOB},
            "spec": {
                "model": {"uri": model_dir, "name": BASE, "dtype": "float32"},
                "datasets": {"train": {"uri": "train.jsonl"}, "maxLength": 128},
                "adapter": {"type": "lora", "r": 16},
                "serving": {"mode": "adapter", "gpus": 0, "maxModelLen": 256},
                "deadlines": deadlines or {},
            },
        }
    )
    paths = ResolvedPaths(output=output, model=model_dir, train="train.jsonl")
    return ResolvedConfig(job=JOB, generation=3, runtime="local", spec=job.spec, paths=paths, served_model_name=JOB)


def _write_run(root: Path, config: ResolvedConfig) -> ArtifactLayout:
    layout = ArtifactLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    layout.run_json.write_text(json.dumps({"job": JOB, "config": config.model_dump(by_alias=True, mode="json", exclude_none=True)}))
    return layout


def _greedy(model: Any, tokenizer: Any) -> str:
    import torch

    ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, trained_adapter: Path) -> dict[str, Any]:
    """A run's artifacts: the tiny base, the adapter trained on the quickstart task, the merged model, and
    the answers transformers gives for each."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("serve")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = {"base": _greedy(base, tokenizer)}
    tuned = PeftModel.from_pretrained(base, trained_adapter)
    expected["adapter"] = _greedy(tuned, tokenizer)
    artifacts = root / "artifacts"
    layout = _write_run(artifacts, _config(str(tiny_model_dir), str(artifacts)))
    shutil.copytree(trained_adapter, layout.adapter)
    merged = tuned.merge_and_unload()
    expected["merged"] = _greedy(merged, tokenizer)
    return {"artifacts": artifacts, "layout": layout, "expected": expected, "merged": merged, "tokenizer": tokenizer}


def judge_outcome(url: str) -> None:
    """The `score_model` grader asks the served base model, as its prompt says, and reads the reply: a
    score when the reply is an integer in range, else the reply quoted in the item's error after retries."""
    from finetune_api.job import Grader
    from finetune_trainer.evaluation.graders import JudgeDefaults, build_grader

    spec = Grader(name="judge", type="score_model", rubric="Is {{ item.reference }} the class of the ticket?",
                  max_retries=1, timeout_seconds=120)
    grader = build_grader(spec, [], judge=JudgeDefaults(url, BASE))
    item = {"reference": LEARNED}
    reply = chat(url, BASE, grader.messages(LEARNED, item), 8)  # the same greedy request, sent directly
    (result,) = grader.grade_batch([LEARNED], [item])
    grader.close()
    try:
        expected = grader.parse(reply)
    except ValueError as exc:
        assert result.score == 0.0 and result.error == f"ValueError: after 2 attempts: {exc}"
    else:
        assert result.score == expected and result.error is None


@pytest.mark.slow
def test_adapter_mode_serves_base_and_adapter_by_name_and_the_base_judges(run_dir: dict[str, Any]) -> None:
    config, layout = load_run(run_dir["artifacts"])
    expected = run_dir["expected"]
    assert expected["adapter"] == LEARNED != expected["base"], expected
    with server_for_run(config, layout) as server:
        assert server.adapters == {JOB: str(layout.adapter)}
        server.wait_ready()
        assert set(server.models()) == {BASE, JOB}
        assert chat(server.url, JOB, QUESTION, MAX_TOKENS) == LEARNED
        assert chat(server.url, BASE, QUESTION, MAX_TOKENS) == expected["base"]
        judge_outcome(server.url)
    assert server.process is not None and server.process.poll() is not None


@pytest.mark.slow
def test_merged_mode_serves_the_merged_model_under_versioned_names(run_dir: dict[str, Any]) -> None:
    layout: ArtifactLayout = run_dir["layout"]
    run_dir["merged"].save_pretrained(layout.merged)
    run_dir["tokenizer"].save_pretrained(layout.merged)
    config, layout = load_run(run_dir["artifacts"])
    with server_for_run(config, layout) as server:
        assert server.adapters == {}
        server.wait_ready()
        assert server.models() == [f"{JOB}@3", JOB]
        assert chat(server.url, JOB, QUESTION, MAX_TOKENS) == run_dir["expected"]["merged"] == LEARNED


def test_serve_artifacts_names_the_missing_run_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_artifacts(tmp_path, block=False) == 1  # a user error: not an artifacts directory
    assert str(tmp_path / "run.json") in capsys.readouterr().err


def test_nothing_to_serve_is_a_clear_error(tmp_path: Path) -> None:
    layout = _write_run(tmp_path, _config("/models/base", str(tmp_path)))
    config, layout = load_run(tmp_path)
    with pytest.raises(ValueError, match="no merged/, adapter/ or model/"):
        server_for_run(config, layout)


def test_the_serve_phase_keeps_the_manifests_deploying_deadline(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`ftctl run`'s serve phase waits as long as `spec.deadlines.deployingSeconds` says (a real vLLM
    cannot import in 1 s), then fails naming that field, and leaves no server behind."""
    import shutil

    config = _config(str(tiny_model_dir), str(tmp_path), deadlines={"deployingSeconds": 1})
    layout = _write_run(tmp_path, config)
    shutil.copytree(tiny_model_dir, layout.merged)
    config, layout = load_run(tmp_path)
    with pytest.raises(RuntimeError, match=r"vLLM not ready after 1 s \(spec\.deadlines\.deployingSeconds\)"):
        serve_local_run(config, layout, QUESTION)
    assert (tmp_path / "logs" / "vllm.log").read_text().startswith("$ ")


def test_adapter_rank_reads_peft_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 48}))
    assert adapter_rank(tmp_path) == 48
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        adapter_rank(tmp_path / "missing")


def test_the_local_server_runs_its_worker_in_the_engine_process(tmp_path: Path) -> None:
    server = LocalVllmServer(tmp_path, "tiny", port=8000, log_path=tmp_path / "vllm.log")
    assert server.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and server.env["VLLM_CPU_KVCACHE_SPACE"] == "1"

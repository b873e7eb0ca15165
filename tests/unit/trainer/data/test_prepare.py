"""The prepare phase end to end on CPU: good data is prepared once, bad data fails naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api.job import DataReport
from finetune_api.resolved import ArtifactLayout
from finetune_trainer.data import load_prepared, prepared_info
from finetune_api.contract.exit_codes import INFRASTRUCTURE_ERROR as EXIT_INFRASTRUCTURE, OK as EXIT_OK, USER_ERROR as EXIT_USER_ERROR
from finetune_api.contract.summaries import PrepareSummary
from finetune_api.contract.artifacts import tree_digest
from finetune_trainer.data.prepare import run_prepare
from finetune_trainer.phases.prepare import main as prepare_main

from .conftest import BAD, QUICKSTART, MakeConfig, chat, write_jsonl

pytestmark = pytest.mark.unit
EXPECTED = json.loads((BAD / "expected.json").read_text())
CORPUS = sorted(BAD.glob("*.jsonl"))


def quickstart(make_config: MakeConfig, **kwargs: object):  # noqa: ANN201 - a ResolvedConfig
    return make_config(QUICKSTART / "train.jsonl", QUICKSTART / "validation.jsonl", QUICKSTART / "eval.jsonl", **kwargs)


def nothing_prepared(layout: ArtifactLayout) -> bool:
    """No prepared dataset, no pointer to one, no half-written temporary directory."""
    entries = [p.name for p in layout.data.iterdir()] if layout.data.exists() else []
    return all(name in ("report.json", "report.md") for name in entries)


def test_quickstart_is_prepared_with_the_right_counts(make_config: MakeConfig) -> None:
    config = quickstart(make_config)
    result = run_prepare(config)
    assert result.exit_code == EXIT_OK, result.findings.printable()
    layout = ArtifactLayout(config.paths.output)
    report = json.loads(layout.data_report.read_text())
    assert {n: s["examples"] for n, s in report["splits"].items()} == {"train": 400, "validation": 40, "eval": 60}
    assert report["dropped"] == {} and report["errors"] == {}
    assert sum(h["count"] for h in report["splits"]["train"]["histogram"]) == 400
    assert "400 training examples ready" in layout.data_report.with_suffix(".md").read_text()
    summary = result.termination().data
    assert summary is not None
    assert (summary.train_examples, summary.validation_examples, summary.eval_examples) == (400, 40, 60)
    assert summary.train_tokens == report["splits"]["train"]["tokens"] > 0
    assert summary.report_path == str(layout.data_report)
    # the base model's content identity, by the recipe anyone can rerun (`sha256sum` manifest)
    assert summary.model_digest == tree_digest(config.paths.model) and summary.model_digest.startswith("sha256:")


def test_prepared_splits_are_what_train_and_evaluate_read(make_config: MakeConfig, tiny_tokenizer) -> None:  # noqa: ANN001
    config = quickstart(make_config)
    assert run_prepare(config).ok
    layout = ArtifactLayout(config.paths.output)
    info = prepared_info(layout)
    assert info["splits"]["train"]["columns"] == ["input_ids", "assistant_masks"]
    train = load_prepared(layout, "train")
    assert train.column_names == ["input_ids", "assistant_masks"] and len(train) == 400
    ids, mask = train[0]["input_ids"], train[0]["assistant_masks"]
    trained = tiny_tokenizer.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    first = json.loads((QUICKSTART / "train.jsonl").read_text().splitlines()[0])
    assert trained == first["messages"][-1]["content"] + "<|im_end|>"
    evaluation = load_prepared(layout, "eval")
    assert evaluation.column_names == ["prompt", "reference", "row"]
    assert evaluation[0]["prompt"][-1]["role"] == "user" and evaluation[0]["reference"]
    with pytest.raises(KeyError, match="no 'regression' split"):
        load_prepared(layout, "regression")


def test_same_inputs_reuse_the_same_content_addressed_directory(make_config: MakeConfig) -> None:
    config = quickstart(make_config)
    first = run_prepare(config).prepared_dir
    second = run_prepare(config).prepared_dir
    assert first == second and first is not None and first.name == prepared_info(ArtifactLayout(config.paths.output))["hash"]
    other = run_prepare(quickstart(make_config, max_length=256)).prepared_dir
    assert other != first


def test_validation_set_is_the_eval_set_when_there_is_none(make_config: MakeConfig) -> None:
    result = run_prepare(make_config(QUICKSTART / "train.jsonl", QUICKSTART / "validation.jsonl"))
    assert result.ok and result.summary.eval_examples == 40 and result.summary.warnings == 0


def test_bad_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15
    assert len({p.name.split("-")[0] for p in CORPUS}) >= 15
    assert set(EXPECTED) == {p.name for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_dataset_fails_naming_rule_and_line(path: Path, make_config: MakeConfig) -> None:
    expected = dict(EXPECTED[path.name])
    line = expected.pop("line")
    method = expected.pop("method", None)
    template = expected.pop("chat_template", None)
    validation = expected.pop("validation", None)
    fmt = expected.pop("format", None)
    if fmt:
        expected["train_format"] = fmt
    config = make_config(
        path,
        validation=BAD / validation if validation else None,
        method={"type": method} if method else None,
        model={"chatTemplate": template} if template else None,
        **expected,
    )
    result = run_prepare(config)
    rule_id = path.name.split("-")[0]
    assert result.exit_code == EXIT_USER_ERROR
    printed = result.findings.printable()
    assert any(p.startswith(f"{path}:{line}: {rule_id} ") for p in printed), printed
    assert nothing_prepared(ArtifactLayout(config.paths.output))
    message = result.termination()
    assert message.ok is False and message.reason == "UserError" and rule_id in (message.message or "")


def test_leakage_is_removed_from_train_and_reported(tmp_path: Path, make_config: MakeConfig) -> None:
    rows = [chat(f"question {i}", f"answer {i}") for i in range(60)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    # The same prompt with another answer is leakage too.
    validation = write_jsonl(tmp_path / "val.jsonl", [chat("question 1", "another answer"), chat("new", "x")])
    held_out = write_jsonl(tmp_path / "eval.jsonl", [rows[2], rows[3], chat("fresh", "y")])
    result = run_prepare(make_config(train, validation, held_out))
    assert result.ok
    assert result.report["leakage"]["train"] == {"validation": 1, "eval": 2}
    assert result.report["dropped"] == {"FT015": 3}
    assert result.summary.train_examples == 57 and result.summary.dropped == {"FT015": 3}
    leaked = [f for f in result.findings.items if f.rule.id == "FT015"]
    assert sorted(f.line for f in leaked) == [2, 3, 4]

    failing = run_prepare(make_config(train, validation, held_out, leakage="fail"))
    assert failing.exit_code == EXIT_USER_ERROR
    ignored = run_prepare(make_config(train, validation, held_out, leakage="ignore"))
    assert ignored.ok and ignored.summary.train_examples == 60 and ignored.summary.warnings == 3


def test_exact_duplicates_are_dropped_and_counted(tmp_path: Path, make_config: MakeConfig) -> None:
    rows = [chat(f"q{i}", f"a{i}") for i in range(50)]
    # Whitespace differences are the same row; another answer is not.
    duplicates = [rows[0], chat(" q1 ", "a1"), chat("q2", "a2  "), chat("q3", "another")]
    train = write_jsonl(tmp_path / "train.jsonl", rows + duplicates)
    result = run_prepare(make_config(train))
    assert result.ok
    assert result.summary.dropped == {"FT014": 3} and result.summary.train_examples == 51
    kept = run_prepare(make_config(train, dedup=False))
    assert kept.summary.train_examples == 54 and kept.summary.dropped == {}


@pytest.mark.parametrize("policy", ["drop", "truncate", "fail"])
def test_over_length_policy_with_counts(policy: str, tmp_path: Path, make_config: MakeConfig) -> None:
    short = [chat(f"q{i}", f"a{i}") for i in range(50)]
    long = [chat(f"long {i}", " ".join(f"w{i}x{j}" for j in range(30))) for i in range(4)]
    train = write_jsonl(tmp_path / "train.jsonl", short + long)
    config = make_config(train, max_length=32, over_length=policy)
    result = run_prepare(config)
    split = result.report["splits"]["train"]
    if policy == "drop":
        assert result.ok and result.summary.dropped == {"FT013": 4} and split["examples"] == 50
    elif policy == "truncate":
        assert result.ok and split["truncated"] == 4 and split["examples"] == 54
        assert split["length"]["max"] == 32
        assert all(len(ids) <= 32 for ids in load_prepared(ArtifactLayout(config.paths.output), "train")["input_ids"])
    else:
        assert result.exit_code == EXIT_USER_ERROR and result.report["errors"] == {"FT013": 4}


def test_preference_and_prompt_rows_are_kept_as_text(tmp_path: Path, make_config: MakeConfig) -> None:
    pairs = [{"prompt": f"Say hi {i}", "chosen": f"Hello {i}!", "rejected": f"No {i}."} for i in range(55)]
    train = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    held_out = write_jsonl(tmp_path / "eval.jsonl", [chat("Say hi 100", "Hello 100!")])
    config = make_config(train, eval=held_out, train_format="preference", method={"type": "dpo"})
    result = run_prepare(config)
    assert result.ok, result.findings.printable()
    dpo = load_prepared(ArtifactLayout(config.paths.output), "train")
    assert dpo.column_names == ["prompt", "chosen", "rejected"]
    assert dpo[0]["prompt"] == [{"role": "user", "content": "Say hi 0"}]
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": "Hello 0!"}]


def test_unreadable_volume_is_infrastructure(make_config: MakeConfig) -> None:
    # Reading /proc/self/mem fails with EIO: an I/O error on the volume, which is retried.
    result = run_prepare(make_config("/proc/self/mem"))
    assert result.exit_code == EXIT_INFRASTRUCTURE
    assert "cannot read a dataset" in (result.termination().data or DataReport()).message


def test_phase_entry_prints_findings_and_writes_termination_message(
    tmp_path: Path, make_config: MakeConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = BAD / "FT001-json-parse.jsonl"
    config_file = tmp_path / "config.json"
    config_file.write_text(make_config(bad).model_dump_json(by_alias=True))
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("FT_TERMINATION_LOG", str(termination))
    assert prepare_main(str(config_file)) == EXIT_USER_ERROR
    assert f"{bad}:3: FT001 json-parse: not valid JSON" in capsys.readouterr().err
    message = PrepareSummary.parse(termination.read_text())
    assert message is not None and message.ok is False and message.reason == "UserError"
    assert "FT001" in (message.message or "") and message.data is not None and message.data.train_examples == 3
    assert len(termination.read_bytes()) <= 4096


@pytest.mark.slow
def test_trl_sft_trainer_takes_the_prepared_split_as_is(make_config: MakeConfig, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The contract with `train`: TRL skips tokenizing and learns exactly the assistant answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = quickstart(make_config)
    assert run_prepare(config).ok
    dataset = load_prepared(ArtifactLayout(config.paths.output), "train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_length=128, report_to=[], use_cpu=True, assistant_only_loss=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=dataset, processing_class=tokenizer)
    answers = {json.loads(line)["messages"][-1]["content"] for line in (QUICKSTART / "train.jsonl").read_text().splitlines()}
    for row in trainer.train_dataset.select(range(20)):
        learned = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])
        assert learned.removesuffix("<|im_end|>") in answers and learned.endswith("<|im_end|>")

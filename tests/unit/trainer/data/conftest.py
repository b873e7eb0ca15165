"""Fixtures of the data tests: resolved configs around the quickstart manifest, and the corpora."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import yaml

from finetune_api.job import FineTuneJob
from finetune_api.resolved import ResolvedConfig, ResolvedPaths
from finetune_trainer.data.tokenize import Tokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[4]
QUICKSTART = ROOT / "examples" / "data" / "quickstart"
BAD = ROOT / "tests" / "data" / "bad"
MakeConfig = Callable[..., ResolvedConfig]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def make_config(tmp_path: Path, tiny_model_dir: Path) -> MakeConfig:
    """A ResolvedConfig from the quickstart manifest with other data, datasets settings or method."""
    manifest = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())

    def make(
        train: Path | str,
        validation: Path | str | None = None,
        eval: Path | str | None = None,  # noqa: A002 - the spec's name
        method: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        **datasets: Any,
    ) -> ResolvedConfig:
        spec = json.loads(json.dumps(manifest["spec"]))
        ds: dict[str, Any] = {"train": {"uri": str(train)}, "max_length": 128}
        if validation:
            ds["validation"] = {"uri": str(validation)}
        if eval:
            ds["eval"] = {"uri": str(eval)}
        for key, value in datasets.items():
            if key.endswith("_format"):
                ds[key.removesuffix("_format")]["format"] = value
            else:
                ds[key] = value
        spec["datasets"] = ds
        if method:
            spec["method"] = method
        if model:
            spec["model"] = {**spec["model"], **model}
        job = FineTuneJob.model_validate({**manifest, "spec": spec})
        paths = ResolvedPaths(
            output=str(tmp_path / "out"), model=str(tiny_model_dir), train=str(train),
            validation=str(validation) if validation else None, eval=str(eval) if eval else None,
        )
        return ResolvedConfig(job="t", spec=job.spec, paths=paths)

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return load_tokenizer(str(tiny_model_dir))

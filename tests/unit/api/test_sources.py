"""Source URIs parsed into typed sources (the operator's view: which pods need which Secret)."""

from __future__ import annotations

import pytest

from finetune_api.sources import Source, parse_source

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("uri", "revision", "dataset", "expected"), [
    ("hf://acme/llm", None, False, Source("hf", "acme/llm")),
    ("hf://acme/llm@v2", None, False, Source("hf", "acme/llm", revision="v2")),
    ("hf://acme/llm", "main", False, Source("hf", "acme/llm", revision="main")),
    ("hf://gpt2", None, False, Source("hf", "gpt2")),
    ("hf://datasets/acme/chats/data/train.jsonl", None, False, Source("hf", "acme/chats", "data/train.jsonl", repo_type="dataset")),
    ("hf://acme/chats", None, True, Source("hf", "acme/chats", repo_type="dataset")),
    ("hf://datasets/acme/chats@v1", None, False, Source("hf", "acme/chats", revision="v1", repo_type="dataset")),
    ("hf://models/acme/llm", None, True, Source("hf", "acme/llm")),
    ("s3://bucket/models/llm/", None, False, Source("s3", "bucket", "models/llm")),
    ("s3://bucket", None, False, Source("s3", "bucket", "")),
    ("pvc://models/base", None, False, Source("pvc", "models", "base")),
    ("./data/train.jsonl", None, True, Source("local", "./data/train.jsonl")),
])
def test_uris_parse_to_their_source(uri: str, revision: str | None, dataset: bool, expected: Source) -> None:
    assert parse_source(uri, revision, dataset) == expected
    assert expected.remote == (expected.scheme in ("hf", "s3"))


@pytest.mark.parametrize("uri", ["gs://bucket/x"])
def test_unparseable_uris_name_themselves(uri: str) -> None:
    with pytest.raises(ValueError, match=uri.split("/")[0]):
        parse_source(uri)


def test_a_suites_dataset_is_a_source_and_its_fetched_copy_is_what_evaluation_reads() -> None:
    from finetune_api import FineTuneJob
    from finetune_api.contract.sources import FetchSummary, ResolvedSource
    from finetune_api.resolved import ResolvedConfig, ResolvedPaths, job_sources
    from finetune_api.sources import suite_role

    job = FineTuneJob.model_validate({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j"},
        "spec": {"model": {"uri": "/m"}, "datasets": {"train": {"uri": "/t.jsonl"}},
                 "evaluation": {"suites": [{"name": "safety", "kind": "safety"},
                                           {"name": "tickets", "dataset": {"uri": "s3://evals/tickets.jsonl"}}]}},
    })
    sources = job_sources(job.spec)
    assert sources[suite_role(1)][0] == Source("s3", "evals", "tickets.jsonl") and suite_role(0) not in sources
    config = ResolvedConfig(job="j", spec=job.spec, paths=ResolvedPaths(
        output="/o", model="/m", train="/t.jsonl", suites={"tickets": "s3://evals/tickets.jsonl"}))
    assert config.source_path(suite_role(1)) == "s3://evals/tickets.jsonl" and config.source_path("train") == "/t.jsonl"
    fetched = FetchSummary(sources=[ResolvedSource(role=suite_role(1), uri="s3://evals/tickets.jsonl", scheme="s3",
                                                   identity="s3:evals/tickets.jsonl#sha256:0", path="/cache/k/files/tickets.jsonl")])
    assert config.with_fetched(fetched).paths.suites == {"tickets": "/cache/k/files/tickets.jsonl"}

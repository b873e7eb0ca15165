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

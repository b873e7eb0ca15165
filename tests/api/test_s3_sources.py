"""`s3://` sources against a real S3-compatible store (SeaweedFS built from Go modules): a private
bucket that needs the job's Secret, the content-addressed cache (a second job reads nothing from the
store, counted by the store), and no credential in anything the fetch step writes or prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from finetune_api.contract.sources import credential_env
from tests.harness.cluster import build, missing_binaries
from tests.harness.objectstore import WEED, ObjectStore
from tests.unit.trainer.fetch.conftest import FetchRun, job_config, run_fetch  # noqa: F401 - fixture

pytestmark = pytest.mark.api
BUCKET = "private-models"
MODEL_FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": bytes(range(256)) * 800,
               "tokenizer/tokenizer.json": b'{"version": "1.0"}'}
TRAIN = b'{"prompt": "2+2?", "completion": "4"}\n' * 50


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A SeaweedFS server with one private bucket: a model under `tiny-llm/` and a JSONL dataset."""
    if missing_binaries(["weed"]):
        if os.environ.get("FT_SKIP_BUILD") == "1":
            pytest.skip(f"{WEED} is not built and FT_SKIP_BUILD=1: run scripts/build-controlplane.sh")
        build()
    workdir = tmp_path_factory.mktemp("seaweedfs")
    server = ObjectStore(workdir, (BUCKET,)).start()
    try:
        model = workdir / "seed" / "tiny-llm"
        for name, data in MODEL_FILES.items():
            (model / name).parent.mkdir(parents=True, exist_ok=True)
            (model / name).write_bytes(data)
        server.put_tree(BUCKET, "tiny-llm", model)
        (workdir / "seed" / "data").mkdir()
        (workdir / "seed" / "data" / "train.jsonl").write_bytes(TRAIN)
        server.put_tree(BUCKET, "data", workdir / "seed" / "data")
        yield server
    finally:
        server.stop()


def secret_env(store: ObjectStore, *roles: str) -> dict[str, str]:
    """What the operator injects from the job's Secret (secretKeyRef) into the fetch container."""
    keys = store.reader.env(store.endpoint)
    return {credential_env(role, key): value for role in roles for key, value in keys.items()}  # type: ignore[arg-type]


ANONYMOUS = {"AWS_SKIP_SIGNATURE": "true"}
"""No Secret: unsigned requests (obstore would otherwise look for instance credentials)."""


def test_private_bucket_needs_the_secret(tmp_path: Path, store: ObjectStore, run_fetch: Callable[..., FetchRun]) -> None:  # noqa: F811
    config = job_config(tmp_path, {"uri": f"s3://{BUCKET}/tiny-llm"}, {"uri": f"s3://{BUCKET}/data/train.jsonl"},
                        tmp_path / "cache")
    run = run_fetch(config, {**ANONYMOUS, "AWS_ENDPOINT_URL": store.endpoint})
    assert run.returncode == 1, run.output
    assert f"s3://{BUCKET}/tiny-llm" in run.output and "secretRef" in run.output and "Traceback" not in run.output


def test_second_job_on_the_same_model_reads_nothing_from_the_store(
    tmp_path: Path, store: ObjectStore, run_fetch: Callable[..., FetchRun],  # noqa: F811
) -> None:
    cache = tmp_path / "cache"
    env = secret_env(store, "model", "train")
    before = store.sent_bytes(BUCKET)
    first = run_fetch(job_config(tmp_path, {"uri": f"s3://{BUCKET}/tiny-llm", "secretRef": {"name": "models"}},
                                 {"uri": f"s3://{BUCKET}/data/train.jsonl", "secretRef": {"name": "models"}}, cache), env)
    assert first.returncode == 0, first.output
    assert first.summary is not None
    model, train = first.summary.sources
    model_bytes = sum(len(d) for d in MODEL_FILES.values())
    assert store.sent_bytes(BUCKET) - before == model_bytes + len(TRAIN)
    assert model.identity.startswith(f"s3:{BUCKET}/tiny-llm#sha256:") and model.downloaded_bytes == model_bytes
    for name, data in MODEL_FILES.items():
        assert (Path(model.path) / name).read_bytes() == data
    assert Path(train.path).name == "train.jsonl" and Path(train.path).read_bytes() == TRAIN

    after_first = store.sent_bytes(BUCKET)
    second = run_fetch(job_config(tmp_path, {"uri": f"s3://{BUCKET}/tiny-llm", "secretRef": {"name": "models"}},
                                  {"uri": f"s3://{BUCKET}/data/train.jsonl", "secretRef": {"name": "models"}}, cache,
                                  name="job-b"), env)
    assert second.returncode == 0, second.output
    assert second.summary is not None
    assert [s.identity for s in second.summary.sources] == [model.identity, train.identity]
    assert store.sent_bytes(BUCKET) == after_first, "the second job read object bytes from the store"

    secret = store.reader.secret_access_key.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret in p.read_bytes()], "a credential was written to a file"
    assert store.reader.secret_access_key not in first.output + second.output


def test_a_changed_object_is_a_new_identity(tmp_path: Path, store: ObjectStore, run_fetch: Callable[..., FetchRun]) -> None:  # noqa: F811
    import obstore

    env = secret_env(store, "model", "train")
    obstore.put(store.store(BUCKET), "v/model.safetensors", b"one")
    spec = ({"uri": f"s3://{BUCKET}/v"}, {"uri": f"s3://{BUCKET}/data/train.jsonl"})
    first = run_fetch(job_config(tmp_path, *spec, tmp_path / "cache"), env)
    obstore.put(store.store(BUCKET), "v/model.safetensors", b"two!")
    second = run_fetch(job_config(tmp_path, *spec, tmp_path / "cache", name="job-b"), env)
    assert first.summary is not None and second.summary is not None, first.output + second.output
    old, new = first.summary.sources[0], second.summary.sources[0]
    assert old.identity != new.identity and new.downloaded_bytes == 4
    assert (Path(new.path) / "model.safetensors").read_bytes() == b"two!"
    assert (Path(old.path) / "model.safetensors").read_bytes() == b"one", "a cached entry never changes"


def test_a_parquet_dataset_from_s3_is_checked_with_its_column_mapping(
    tmp_path: Path, store: ObjectStore, run_fetch: Callable[..., FetchRun],  # noqa: F811
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finetune_api.resolved import load_resolved_config
    from finetune_trainer.data.prepare import CheckSettings, check_datasets, sources_from_config

    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(1, 9)]
    rows[5]["answer"] = ""
    seed = tmp_path / "seed"
    seed.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), seed / "part-0.parquet")
    store.put_tree(BUCKET, "qa", seed)
    train = {"uri": f"s3://{BUCKET}/qa", "secretRef": {"name": "data"}, "columns": {"prompt": "question", "completion": "answer"}}
    config = job_config(tmp_path, {"uri": f"s3://{BUCKET}/tiny-llm", "secretRef": {"name": "data"}}, train, tmp_path / "cache")
    fetched = run_fetch(config, secret_env(store, "model", "train"))
    assert fetched.returncode == 0, fetched.output

    phase_config = load_resolved_config(Path(config.paths.output).parent / "config.json")
    outcome = check_datasets(sources_from_config(phase_config), CheckSettings(), None)
    split = outcome.splits["train"]
    (parquet,) = split.files
    assert parquet.format == "parquet" and Path(parquet.name).name == "part-0.parquet"
    assert Path(parquet.name).is_relative_to(tmp_path / "cache")
    assert (split.rows, len(split.examples), split.format) == (8, 7, "prompt_completion")
    assert split.examples[0].prompt == [{"role": "user", "content": "What is 1+1?"}]
    assert [str(f) for f in outcome.findings.errors] == [f"{parquet.name}:6: FT006 empty-content: completion is empty"]

"""`s3://` sources against a real S3-compatible store (SeaweedFS built from Go modules): a private
bucket that needs the job's Secret, the content-addressed cache (a second job reads nothing from the
store, counted by the store), and no credential in anything the fetch step writes or prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from finetune_api.contract.sources import credential_env
from finetune_api.job import OutputSpec
from finetune_api.resolved import ResolvedConfig
from tests.harness.cluster import build, missing_binaries
from tests.harness.objectstore import WEED, ObjectStore
from tests.unit.trainer.fetch.conftest import FetchRun, job_config, run_fetch, run_trainer_phase  # noqa: F401 - fixture

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


def _finished_run(tmp_path: Path, output: dict[str, object]) -> ResolvedConfig:
    """The artifacts of a finished run (as training and evaluation leave them) and its config with `output`."""
    from finetune_api.resolved import ArtifactLayout
    from finetune_trainer.atomic_json import write_json_atomic
    from finetune_trainer.train.run_record import build_run_record, write_run_record

    base = job_config(tmp_path, {"uri": "pvc://models/tiny"}, {"uri": "pvc://data/train.jsonl"}, tmp_path / "cache")
    config = base.model_copy(update={"spec": base.spec.model_copy(update={"output": OutputSpec.model_validate(output)})})
    layout = ArtifactLayout(config.paths.output)
    layout.adapter.mkdir(parents=True)
    (layout.adapter / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
    write_json_atomic(layout.adapter / "adapter_config.json", {"r": 8})
    write_json_atomic(layout.eval_report, {"passed": True})
    write_json_atomic(layout.data_report, {"trainExamples": 50})
    (layout.checkpoints / "checkpoint-2").mkdir(parents=True)
    (layout.checkpoints / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    write_run_record(layout, build_run_record(config, {"learningRate": 1e-4}, "sha256:data"))
    return config


SHARDS = 120
"""Enough files that their keys and ETags (~12 KiB) are far past the 4 KiB termination message."""


def test_a_runs_outputs_are_uploaded_with_the_output_secret_and_read_back(tmp_path: Path, store: ObjectStore) -> None:
    """The final artifacts (not checkpoints) under the output prefix: a model of many shards, every key and
    ETag in the record (upload.json on the volume and in the bucket, and the uploaded run.json), nothing
    cut from the termination message, which only counts and names the record; a repeat writes the same
    keys; no credential anywhere."""
    import json

    import obstore

    from finetune_api.contract.termination import MAX_BYTES
    from finetune_api.contract.upload import UploadRecord, UploadSummary
    from finetune_api.resolved import ArtifactLayout

    config = _finished_run(tmp_path, {"uri": f"s3://{BUCKET}/runs/job-a", "secretRef": {"name": "uploader"}})
    layout = ArtifactLayout(config.paths.output)
    shards = [f"adapter/adapter_model-{i:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)]
    for i, name in enumerate(shards):
        (layout.root / name).write_bytes(bytes([i % 256]) * (i + 1))
    keys = store.admin.env(store.endpoint)
    env = {credential_env("output", key): value for key, value in keys.items()}
    first = run_trainer_phase("upload", config, env)
    assert first.returncode == 0, first.stdout + first.stderr
    message = (layout.root.parent / "termination").read_text()
    summary = UploadSummary.model_validate_json(message)
    assert len(message.encode()) < MAX_BYTES and not summary.truncated
    record = UploadRecord.model_validate_json((layout.root / "upload.json").read_text())
    admin = store.store(BUCKET)
    uploaded = {o.key: o for o in record.objects}
    assert sorted(uploaded) == sorted(f"runs/job-a/{name}" for name in (
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "data/report.json", "eval/report.json",
        "run.json", *shards))
    assert record.objects[-1].key == "runs/job-a/run.json"
    assert (summary.count, summary.bytes) == (len(uploaded), sum(o.bytes for o in record.objects))
    assert summary.manifest is not None and summary.manifest.key == "runs/job-a/upload.json"
    assert obstore.head(admin, summary.manifest.key)["e_tag"] == summary.manifest.etag
    remote_manifest = UploadRecord.model_validate_json(bytes(obstore.get(admin, summary.manifest.key).bytes()))
    assert remote_manifest == record
    for key, obj in uploaded.items():
        assert obj.etag and obstore.head(admin, key)["e_tag"] == obj.etag
        if key != "runs/job-a/run.json":
            assert bytes(obstore.get(admin, key).bytes()) == (layout.root / key.removeprefix("runs/job-a/")).read_bytes()
    remote_record = json.loads(bytes(obstore.get(admin, "runs/job-a/run.json").bytes()))
    assert remote_record["job"] == "job-a" and {o["key"]: o["etag"] for o in remote_record["output"]["objects"]} == {
        k: o.etag for k, o in uploaded.items() if k != "runs/job-a/run.json"}

    again = run_trainer_phase("upload", config, env)
    assert again.returncode == 0, again.stdout + again.stderr
    repeat = UploadRecord.model_validate_json((layout.root / "upload.json").read_text())
    assert [o.key for o in repeat.objects] == [o.key for o in record.objects]
    assert [o.etag for o in repeat.objects[:-1]] == [o.etag for o in record.objects[:-1]], "same bytes, same objects"

    secret = store.admin.secret_access_key.encode()
    objects = [m["path"] for batch in obstore.list(admin, "runs") for m in batch]
    assert objects and not [k for k in objects if secret in bytes(obstore.get(admin, k).bytes())]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret in p.read_bytes()], "a credential was written to a file"
    assert store.admin.secret_access_key not in first.stdout + first.stderr + again.stdout + again.stderr


def test_an_upload_the_store_refuses_fails_naming_the_bucket_and_key(tmp_path: Path, store: ObjectStore) -> None:
    config = _finished_run(tmp_path, {"uri": f"s3://{BUCKET}/runs/job-a", "secretRef": {"name": "read-only"}})
    env = {credential_env("output", key): value for key, value in store.reader.env(store.endpoint).items()}
    denied = run_trainer_phase("upload", config, env)
    output = denied.stdout + denied.stderr
    assert denied.returncode == 1, output
    assert f"s3://{BUCKET}/runs/job-a/adapter/adapter_config.json: access denied" in output and "spec.output.secretRef" in output
    assert "Traceback" not in output and store.reader.secret_access_key not in output


def test_an_evaluation_suites_dataset_from_s3_is_fetched_with_its_secret_and_evaluated_from_the_cache(
    tmp_path: Path, store: ObjectStore, run_fetch: Callable[..., FetchRun],  # noqa: F811
) -> None:
    from finetune_api.job import DatasetRef, EvaluationSpec
    from finetune_api.resolved import load_resolved_config
    from finetune_trainer.evaluation.suites import eval_sets

    suite_uri = f"s3://{BUCKET}/data/train.jsonl"
    (tmp_path / "train.jsonl").write_bytes(TRAIN)
    base = job_config(tmp_path, {"uri": "pvc://models/tiny"}, {"uri": str(tmp_path / "train.jsonl")}, tmp_path / "cache")
    evaluation = EvaluationSpec.model_validate({"suites": [
        {"name": "tickets", "dataset": {"uri": suite_uri, "secretRef": {"name": "evals"}}}]})
    held_out = str(tmp_path / "train.jsonl")
    datasets = base.spec.datasets.model_copy(update={"eval": DatasetRef(uri=held_out)})
    config = base.model_copy(update={
        "spec": base.spec.model_copy(update={"evaluation": evaluation, "datasets": datasets}),
        "paths": base.paths.model_copy(update={"model": str(tmp_path), "eval": held_out, "suites": {"tickets": suite_uri}})})
    without = run_fetch(config, {**ANONYMOUS, "AWS_ENDPOINT_URL": store.endpoint})
    assert without.returncode == 1 and suite_uri in without.output and "secretRef" in without.output, without.output

    fetched = run_fetch(config, secret_env(store, "suite0"))
    assert fetched.returncode == 0, fetched.output
    assert fetched.summary is not None
    (suite,) = [s for s in fetched.summary.sources if s.role == "suite0"]
    assert suite.uri == suite_uri and suite.identity.startswith(f"s3:{BUCKET}/data/train.jsonl#sha256:")
    phase_config = load_resolved_config(Path(config.paths.output).parent / "config.json")
    assert phase_config.paths.suites == {"tickets": suite.path} and Path(suite.path).is_relative_to(tmp_path / "cache")
    tickets = next(s for s in eval_sets(phase_config) if s.name == "tickets")
    assert tickets.source == suite.path and len(tickets.items) == 50 and tickets.items[0].prompt[-1]["content"] == "2+2?"
    assert store.reader.secret_access_key not in without.output + fetched.output

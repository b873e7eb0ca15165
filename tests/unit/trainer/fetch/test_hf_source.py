"""`hf://org/name[@revision]` through huggingface_hub's own resolution code, against a hub cache seeded
on the spot in the hub's cache layout, offline (no hub is reachable here; HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import FetchRun, job_config

pytestmark = pytest.mark.unit

COMMIT_V1 = "1" * 40
COMMIT_MAIN = "a" * 40


def seed_hub_cache(hub: Path, repo: str, snapshots: dict[str, dict[str, bytes]], refs: dict[str, str],
                   repo_type: str = "models") -> None:
    """The hub cache's layout: content-addressed blobs, one snapshot directory of links per commit, and
    refs naming a commit per branch or tag (what `snapshot_download` itself writes)."""
    root = hub / f"{repo_type}--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for commit, files in snapshots.items():
        for name, data in files.items():
            blob = hashlib.sha256(data).hexdigest()
            (root / "blobs" / blob).write_bytes(data)
            link = root / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(root / "blobs" / blob, link.parent))
    for ref, commit in refs.items():
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)


@pytest.fixture
def hub(tmp_path: Path) -> dict[str, str]:
    """A seeded hub cache for `acme/tiny-llm` (main and tag v1 at different commits), and the env that
    makes huggingface_hub use it offline."""
    cache = tmp_path / "hub"
    seed_hub_cache(cache, "acme/tiny-llm", {
        COMMIT_V1: {"config.json": b'{"v": 1}', "model.safetensors": b"w" * 1000},
        COMMIT_MAIN: {"config.json": b'{"v": 2}', "model.safetensors": b"W" * 2000, "sub/tokenizer.json": b"{}"},
    }, {"main": COMMIT_MAIN, "v1": COMMIT_V1})
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def test_hf_model_resolves_to_its_commit_and_a_second_job_downloads_nothing(
    tmp_path: Path, hub: dict[str, str], run_fetch: Callable[..., FetchRun],
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    cache = tmp_path / "sources"
    first = run_fetch(job_config(tmp_path, {"uri": "hf://acme/tiny-llm"}, {"uri": str(data)}, cache), hub)
    assert first.returncode == 0, first.output
    assert first.summary is not None
    model = first.summary.sources[0]
    assert (model.role, model.identity) == ("model", f"hf:model/acme/tiny-llm@{COMMIT_MAIN}")
    cached = Path(model.path)
    assert cached.is_relative_to(cache)
    assert (cached / "config.json").read_bytes() == b'{"v": 2}'
    assert (cached / "sub" / "tokenizer.json").is_file() and not (cached / "config.json").is_symlink()
    assert not (cached / "model.safetensors").stat().st_mode & stat.S_IWUSR, "a cached copy is read-only"
    assert model.downloaded_bytes == model.bytes == 2010
    train = first.summary.sources[1]
    assert train.scheme == "local" and train.path == str(data) and train.identity.startswith("sha256:")

    second = run_fetch(job_config(tmp_path, {"uri": "hf://acme/tiny-llm"}, {"uri": str(data)}, cache, name="job-b"), hub)
    assert second.returncode == 0, second.output
    assert second.summary is not None
    assert second.summary.sources[0].path == model.path and second.summary.sources[0].downloaded_bytes == 0


@pytest.mark.parametrize("model", [
    {"uri": "hf://acme/tiny-llm@v1"},
    {"uri": "hf://acme/tiny-llm", "revision": "v1"},
    {"uri": "hf://acme/tiny-llm", "revision": COMMIT_V1},
])
def test_the_revision_is_pinned_from_the_uri_or_the_spec(
    tmp_path: Path, hub: dict[str, str], run_fetch: Callable[..., FetchRun], model: dict[str, str],
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    run = run_fetch(job_config(tmp_path, model, {"uri": str(data)}, tmp_path / "sources"), hub)
    assert run.returncode == 0, run.output
    assert run.summary is not None
    assert run.summary.sources[0].identity == f"hf:model/acme/tiny-llm@{COMMIT_V1}"
    assert (Path(run.summary.sources[0].path) / "config.json").read_bytes() == b'{"v": 1}'


def test_an_unknown_repo_or_revision_is_a_user_error_naming_it(
    tmp_path: Path, hub: dict[str, str], run_fetch: Callable[..., FetchRun],
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    for uri in ("hf://acme/no-such-model", "hf://acme/tiny-llm@no-such-tag"):
        run = run_fetch(job_config(tmp_path, {"uri": uri}, {"uri": str(data)}, tmp_path / "sources"), hub)
        assert run.returncode == 1, run.output
        assert uri.split("@")[0].removeprefix("hf://") in run.output and "Traceback" not in run.output


def test_a_path_inside_the_repo_is_read_from_the_cached_snapshot(
    tmp_path: Path, hub: dict[str, str], run_fetch: Callable[..., FetchRun],
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    run = run_fetch(job_config(tmp_path, {"uri": "hf://acme/tiny-llm/sub"}, {"uri": str(data)}, tmp_path / "sources"), hub)
    assert run.returncode == 0, run.output
    assert run.summary is not None
    model = run.summary.sources[0]
    assert model.identity == f"hf:model/acme/tiny-llm@{COMMIT_MAIN}" and Path(model.path).name == "sub"
    assert (Path(model.path) / "tokenizer.json").read_bytes() == b"{}"


def test_a_saved_dataset_dict_from_a_hub_dataset_repo_is_checked_with_its_column_mapping(
    tmp_path: Path, hub: dict[str, str], run_fetch: Callable[..., FetchRun],
) -> None:
    import datasets

    from finetune_api.resolved import load_resolved_config
    from finetune_trainer.data.prepare import CheckSettings, check_datasets, sources_from_config

    saved = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"q": f"{i}+{i}?", "a": str(2 * i)} for i in range(4)] + [{"q": "x?", "a": " "}]),
        "test": datasets.Dataset.from_list([{"q": "1+2?", "a": "3"}]),
    }).save_to_disk(str(saved))
    files = {p.relative_to(saved).as_posix(): p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    seed_hub_cache(Path(hub["HF_HUB_CACHE"]), "acme/qa", {COMMIT_MAIN: files}, {"main": COMMIT_MAIN}, "datasets")
    train = {"uri": "hf://acme/qa", "split": "train", "columns": {"prompt": "q", "completion": "a"}}
    config = job_config(tmp_path, {"uri": "hf://acme/tiny-llm"}, train, tmp_path / "sources")
    run = run_fetch(config, hub)
    assert run.returncode == 0, run.output
    assert run.summary is not None and run.summary.sources[1].identity == f"hf:dataset/acme/qa@{COMMIT_MAIN}"

    outcome = check_datasets(sources_from_config(load_resolved_config(Path(config.paths.output).parent / "config.json")),
                             CheckSettings(), None)
    split = outcome.splits["train"]
    (source,) = split.files
    assert source.format == "saved_dataset" and Path(source.name).name == "train"
    assert (split.rows, len(split.examples)) == (5, 4)
    assert [str(f) for f in outcome.findings.errors] == [f"{source.name}:5: FT006 empty-content: completion is empty"]

"""A job's hold on the source cache is released when the job fails or is deleted (issue 15 item 2), on
the test control plane: the real operator (least-privilege ServiceAccount) takes finalizer
`finetune.dev/source-cache-hold`, runs Job `<job>-release`, whose pod the local pod runner runs for real
(the trainer's release step on the artifacts claim), and drops the finalizer once it succeeded.

The cache is seeded as fetch steps leave it, by the trainer's own `SourceCache` (the writer the fetch
step uses): a base shared by three jobs and one dataset entry each of two of them. The cache's limit is
1 byte, so a release evicts every entry no job holds any more, and nothing a holder still lists. Both
jobs end before any pod of theirs runs (no store is needed): one `Failed` at once (its adapter rank is
above the pools'), one `Rejected` by its namespace's cap, which keeps its hold until it is deleted.
Last, the namespace itself is deleted with a holding job in it, and its deletion is not held up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api.contract.sources import SOURCE_CACHE_DIR, cache_holder
from finetune_operator.reconcile.holds import CACHE_HOLD_FINALIZER
from finetune_trainer.fetch.cache import SourceCache
from tests.harness.demo import host_mount_root
from tests.harness.operator import Operator, get, setup_namespace, wait_for, wait_phase
from tests.harness.podrunner import NODE_SELECTOR, TOLERATIONS

pytestmark = pytest.mark.api

BASE, DATA_FAILED, DATA_REJECTED = ("s3:models/tiny-llm#sha256:1", "s3:data/failed#sha256:2",
                                    "s3:data/rejected#sha256:3")


def manifest(name: str, namespace: str, **spec: object) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"uri": "s3://models/tiny-llm", "name": "tiny"},
                     "datasets": {"train": {"uri": f"s3://data/{name}/train.jsonl"}},
                     "resources": {"nodes": 1, "gpusPerNode": 1}, **spec}}


def fill(cache: SourceCache, identity: str) -> None:
    def download(files: Path) -> int:
        (files / "weights.bin").write_bytes(b"w" * 64)
        return 64

    cache.fill(identity, download)


def test_a_failed_or_deleted_jobs_hold_is_released_and_only_entries_no_one_holds_are_evicted(
        cluster, local_runner, namespace, operator_kubeconfig, tmp_path):
    setup_namespace(cluster, namespace)
    mount_root = host_mount_root(cluster, namespace, tmp_path / "pvc", ("finetune-artifacts",))
    cache = SourceCache(mount_root / "finetune-artifacts" / SOURCE_CACHE_DIR)
    for identity in (BASE, DATA_FAILED, DATA_REJECTED):
        fill(cache, identity)
    cache.hold(cache_holder(namespace, "failed"), [BASE, DATA_FAILED])
    cache.hold(cache_holder(namespace, "rejected"), [BASE, DATA_REJECTED])
    cache.hold(cache_holder(namespace, "serving"), [BASE])  # another job, whose pool serves the base
    holders = cache.root / "holders"

    operator = Operator(
        operator_kubeconfig, tmp_path / "operator.log", FT_QUEUE_MODE="none", FT_PVC_MOUNT_ROOT=str(mount_root),
        FT_SOURCE_CACHE_MAX_BYTES="1", FT_ADAPTER_POOL=json.dumps({"maxLoraRank": 8}),
        FT_NAMESPACE_CAPS=json.dumps({namespace: {"maxConcurrentJobs": 0}}),
        FT_POD_NODE_SELECTOR=json.dumps(NODE_SELECTOR), FT_POD_TOLERATIONS=json.dumps(TOLERATIONS),
    ).start()
    try:
        cluster.apply(manifest("failed", namespace, adapter={"r": 16}))
        assert wait_phase(cluster, namespace, "failed", "Failed")["reason"] == "ServingNotPossible"
        wait_for("failed-release to drop the hold", lambda: not (holders / f"{namespace}.failed.json").exists(), timeout=60)
        wait_for("the finalizer to go", lambda: CACHE_HOLD_FINALIZER not in (
            get(cluster, namespace, "finetunejob", "failed") or {})["metadata"].get("finalizers", []), timeout=30)
        release = get(cluster, namespace, "jobs", "failed-release") or {}
        assert (release.get("status") or {}).get("succeeded") == 1, release.get("status")
        assert cache.lookup(DATA_FAILED) is None, "an entry no job holds stayed over the size limit"
        assert cache.lookup(BASE) is not None and cache.lookup(DATA_REJECTED) is not None

        cluster.apply(manifest("rejected", namespace, adapter={"r": 8}))
        rejected = wait_phase(cluster, namespace, "rejected", "Rejected")
        assert rejected["reason"] == "MaxConcurrentJobs"
        body = get(cluster, namespace, "finetunejob", "rejected") or {}
        assert CACHE_HOLD_FINALIZER in body["metadata"]["finalizers"], "a Rejected job may be evaluated again"
        assert (holders / f"{namespace}.rejected.json").exists()

        cluster.kubectl("delete", "finetunejob", "rejected", "-n", namespace, "--wait=true", timeout=90)
        assert not (holders / f"{namespace}.rejected.json").exists()
        assert cache.lookup(DATA_REJECTED) is None
        assert cache.lookup(BASE) is not None, "the base another job holds was evicted"
        assert sorted(p.name for p in holders.iterdir()) == [f"{namespace}.serving.json"]

        # Deleting the namespace: nothing can be created there any more, and the claim goes with it;
        # the hold's finalizer must not keep the namespace terminating.
        cluster.apply(manifest("left", namespace, adapter={"r": 8}))
        wait_phase(cluster, namespace, "left", "Rejected")
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=90)
    finally:
        cluster.kubectl("delete", "finetunejob", "--all", "-n", namespace, "--wait=false", check=False)
        operator.stop()

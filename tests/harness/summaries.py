"""The trainer's termination messages as the api-tier fakes write them: built from the contract's phase
summaries (finetune_api.contract.summaries), the same models the trainer writes and the operator reads."""

from __future__ import annotations

from finetune_api.contract.artifacts import ArtifactRef
from finetune_api.contract.summaries import EvaluateSummary, PrepareSummary, TrainSummary
from finetune_api.contract.upload import UploadedObject, UploadSummary
from finetune_api.job import DataReport, GateResult, MetricResult

PREPARED = PrepareSummary(data=DataReport(train_examples=120, eval_examples=12))
TRAINED = TrainSummary(step=10, total_steps=10, train_loss=0.5, eval_loss=0.6, train_tokens=1000,
                       weights=ArtifactRef(path="adapter", digest="sha256:" + "0" * 64))


def evaluated(passed: bool) -> EvaluateSummary:
    """A verdict on exact_match: 0.9 against a gate of 0.8 when `passed`, else 0.4."""
    tuned = 0.9 if passed else 0.4
    return EvaluateSummary(
        passed=passed, score=f"exact_match {tuned} (base 0.1)", items=12,
        metrics=[MetricResult(name="exact_match", base=0.1, tuned=tuned)],
        gates=[GateResult(metric="exact_match", passed=passed, message="exact_match: tuned 0.900 ≥ min 0.800" if passed else "exact_match: tuned 0.400 < min 0.800")],
        report=ArtifactRef(path="eval/report.json"),
    )


def uploaded(bucket: str, prefix: str) -> UploadSummary:
    """An upload of the adapter and run.json to `s3://bucket/prefix`, then its record with its ETag."""
    return UploadSummary(bucket=bucket, prefix=prefix, message=f"2 object(s) uploaded to s3://{bucket}/{prefix}",
                         count=2, bytes=17284, manifest=UploadedObject(
                             key=f"{prefix}/upload.json", etag='"9e107d9d372bb6826bd81d3542a419d6"', bytes=310))

"""The phase summaries: what each trainer phase reports in its termination message.

The trainer builds them, the operator and `ftctl run` parse them (`PhaseSummary.parse`), and the
api-tier tests' fakes are built from them: a field renamed on one side fails on the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..job import DataReport, GateResult, MetricResult
from .artifacts import ArtifactRef
from .termination import ContractModel, FiniteFloat, PhaseSummary


class PrepareSummary(PhaseSummary):
    """Validating: the data report's summary (also on failure: which rows, how many)."""

    phase: Literal["prepare"] = "prepare"
    data: DataReport | None = None


class TrainSummary(PhaseSummary):
    """Training: where the run stopped and the weights it saved."""

    phase: Literal["train"] = "train"
    interrupted: bool = False
    """Stopped by SIGTERM after a checkpoint (exit 143): the next attempt resumes."""
    step: int = 0
    total_steps: int = 0
    train_tokens: int = 0
    train_loss: FiniteFloat = None
    """The final training loss (mean over the attempt's steps, as the Trainer reports it)."""
    eval_loss: FiniteFloat = None
    """The final validation loss (on the validation split at the last step), when there is one."""
    resumed_from: str | None = None
    weights: ArtifactRef | None = None
    """The adapter (`adapter/`) or, for a full fine-tune, the model (`model/`), with its digest."""
    checkpoint: ArtifactRef | None = None
    """The latest checkpoint (resume point)."""
    metrics: dict[str, float] = Field(default_factory=dict)


class EvaluateSummary(PhaseSummary):
    """Evaluating: the verdict (a failed gate is a verdict, `ok` stays true) or the baseline's scores."""

    phase: Literal["evaluate"] = "evaluate"
    passed: bool | None = None
    score: str = ""
    items: int = 0
    metrics: list[MetricResult] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    report: ArtifactRef | None = None
    """The full report (`eval/report.json`)."""
    evaluated_generation: int | None = None
    baseline: dict[str, float] = Field(default_factory=dict)
    """`evaluate --baseline`: the base model's scores, before training."""


class GraderScores(ContractModel):
    """One grader's mean score on each arm's answers to the same prompts."""

    grader: str
    tuned: float
    base: float


class ShadowSummary(PhaseSummary):
    """A canary's shadow grading (`serving.canary.shadowGrading`): both arms answered the same held-out
    prompts through their own Services; each grader's mean score per arm."""

    phase: Literal["shadow"] = "shadow"
    items: int = 0
    """Prompts each arm answered."""
    scores: list[GraderScores] = Field(default_factory=list)


class MergeSummary(PhaseSummary):
    """Merging an adapter into its base for serving (a full fine-tune's `model/` is already whole)."""

    phase: Literal["merge"] = "merge"
    merged: ArtifactRef | None = None
    dtype: str | None = None

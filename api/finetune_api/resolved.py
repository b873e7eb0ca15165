"""The resolved job config: what the operator (or `ftctl run`) hands every trainer phase.

It travels as JSON in the `<job>-config` ConfigMap (`config.json`) or as a local file, and is read by
`python -m finetune_trainer <phase> --config FILE`. URIs are already mapped to paths inside the pod
(`pvc://claim/path` → `/mnt/pvc/claim/path`); `s3://` and `hf://` stay URIs for the trainer to fetch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .common import ApiModel
from .contract.sources import FetchSummary
from .job import DatasetRef, FineTuneJob, FineTuneJobSpec
from .sources import Source, SourceRole, parse_source, suite_role

PVC_MOUNT_ROOT = "/mnt/pvc"


class ResolvedPaths(ApiModel):
    """Locations as the trainer sees them."""

    output: str
    """Artifacts root (ArtifactLayout below)."""
    model: str
    """Base model directory or URI."""
    train: str
    validation: str | None = None
    eval: str | None = None
    regression: str | None = None
    suites: dict[str, str] = Field(default_factory=dict)
    """Datasets of `evaluation.suites`, by suite name (a safety suite without a dataset has none)."""


class ResolvedConfig(ApiModel):
    """Everything a trainer phase needs, and nothing it must look up in the cluster."""

    job: str
    namespace: str = "default"
    generation: int = 1
    attempt: int = 0
    """Training attempt (0-based); each retry resumes from the latest checkpoint."""
    runtime: Literal["kubernetes", "local"] = "kubernetes"
    spec: FineTuneJobSpec
    paths: ResolvedPaths
    served_model_name: str = ""
    """Name under which the tuned model is served and evaluated (`<job>`)."""
    vllm_url: str | None = None
    """An OpenAI-compatible server to evaluate through, when one is already running."""
    labels: dict[str, str] = Field(default_factory=dict)
    source_cache: str | None = None
    """The source cache (fetch step): hub and S3 sources are downloaded into it once, keyed by identity."""
    source_cache_max_bytes: int | None = None
    """Evict the least recently used entries no job holds once the cache is larger than this."""

    def with_fetched(self, fetched: FetchSummary) -> ResolvedConfig:
        """This config with every fetched source's path replaced by where the fetch step put it."""
        update: dict[str, object] = {role: fetched.path_of(role) or getattr(self.paths, role) for role in FETCHED_ROLES}
        update["suites"] = {name: fetched.path_of(suite_role(index)) or self.paths.suites[name]
                            for index, name in enumerate(s.name for s in self.spec.evaluation.suites)
                            if name in self.paths.suites}
        return self.model_copy(update={"paths": self.paths.model_copy(update=update)})

    def source_path(self, role: SourceRole) -> str:
        """Where the source in `role` is before the fetch step (a path, or the URI of a remote source)."""
        for index, suite in enumerate(self.spec.evaluation.suites):
            if role == suite_role(index):
                return self.paths.suites[suite.name]
        return str(getattr(self.paths, role))


def load_resolved_config(path: str | Path) -> ResolvedConfig:
    """The config a phase runs with: the file, with every fetched source pointed at the cached copy the
    fetch step recorded in the output's `sources.json` (in a pod the ConfigMap still names the URIs)."""
    config = ResolvedConfig.model_validate_json(Path(path).read_text())
    fetched = ArtifactLayout(config.paths.output).sources_json
    if fetched.is_file():
        config = config.with_fetched(FetchSummary.model_validate_json(fetched.read_text()))
    return config


def uri_to_path(uri: str, pvc_root: str = PVC_MOUNT_ROOT) -> str:
    """Map a spec URI to where the trainer reads it: PVCs are mounted under `pvc_root/<claim>`."""
    if uri.startswith("pvc://"):
        claim, _, rest = uri[len("pvc://") :].partition("/")
        return str(Path(pvc_root) / claim / rest) if rest else str(Path(pvc_root) / claim)
    return uri


FETCHED_ROLES: tuple[SourceRole, ...] = ("model", "train", "validation", "eval", "regression")
"""The fixed roles the fetch step resolves (the output is written, not fetched); suite datasets
are `suite<N>` (`job_sources`)."""


def job_sources(spec: FineTuneJobSpec) -> dict[SourceRole, tuple[Source, DatasetRef | None]]:
    """Every source the job reads, parsed, by role (the dataset ref carries its own secretRef); the
    datasets of `evaluation.suites` too (`suite<N>`)."""
    refs: dict[SourceRole, DatasetRef | None] = {
        "train": spec.datasets.train,
        "validation": spec.datasets.validation,
        "eval": spec.datasets.eval,
        "regression": spec.evaluation.regression,
    }
    out: dict[SourceRole, tuple[Source, DatasetRef | None]] = {
        "model": (parse_source(spec.model.uri, spec.model.revision), None)
    }
    for index, suite in enumerate(spec.evaluation.suites):
        refs[suite_role(index)] = suite.dataset
    for role, ref in refs.items():
        if ref is not None:
            out[role] = (parse_source(ref.uri, dataset=True), ref)
    return out


def claim_of(uri: str) -> str | None:
    """The claim of a `pvc://claim/path` URI; None for any other scheme."""
    return uri[len("pvc://") :].split("/", 1)[0] if uri.startswith("pvc://") else None


def pvc_claims(job: FineTuneJob, default_output: str | None = None) -> list[str]:
    """Every PVC the job's pods must mount, in a stable order."""
    spec = job.spec
    uris = [spec.model.uri, spec.datasets.train.uri, spec.output.uri or default_output or ""]
    suites = [suite.dataset for suite in spec.evaluation.suites]
    for ref in (spec.datasets.validation, spec.datasets.eval, spec.evaluation.regression, *suites):
        if ref is not None:
            uris.append(ref.uri)
    claims: list[str] = []
    for uri in uris:
        claim = claim_of(uri)
        if claim is not None and claim not in claims:
            claims.append(claim)
    return claims


class ArtifactLayout:
    """The artifacts layout under the output location (DESIGN.md §4). One place for every path."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def data_report(self) -> Path:
        return self.data / "report.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_report(self) -> Path:
        return self.eval_dir / "report.json"

    @property
    def base_outputs(self) -> Path:
        """The base model's generations, kept by the baseline evaluation for the final one."""
        return self.eval_dir / "base-outputs.json"

    @property
    def sources_json(self) -> Path:
        """The fetch step's resolved sources (identities and cached paths)."""
        return self.root / "sources.json"

    def fetched(self, role: str) -> Path:
        """A link to where the fetch step put the source in `role` (vLLM pods serve the base model
        through it: its cache path is known only after the fetch)."""
        return self.root / "sources" / role

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files of training (`spec.tracking.tensorboard`)."""
        return self.root / "tensorboard"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def progress_log(self) -> Path:
        return self.root / "progress.jsonl"

    def tuned_weights(self, adapter_type: str) -> Path:
        """Where `train` leaves the result: an adapter directory, or a full model for `full`."""
        return self.model if adapter_type == "full" else self.adapter

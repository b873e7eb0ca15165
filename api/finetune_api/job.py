"""The FineTuneJob API: one manifest from data to a served, evaluated model (DESIGN.md §3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from .common import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    ApiModel,
    Condition,
    StatusModel,
    Toleration,
    cel,
    immutable,
    opt,
    quantity_field,
)
from .contract.vllm_flags import LORA_RANKS, RESERVED_FLAGS
from .contract.upload import UploadedObject

Phase = Literal[
    "Pending",
    "Validating",
    "Queued",
    "Training",
    "Evaluating",
    "Uploading",
    "Deploying",
    "Serving",
    "Succeeded",
    "Failed",
    "Rejected",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Rejected"})

_SEGMENT = r"([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)"
"""One path segment that is neither `.` nor `..` (RE2 and Rust regex have no look-ahead)."""
URI_PATTERN = (
    rf"^(pvc://{DNS_LABEL_PATTERN[1:-1]}(/{_SEGMENT})*/?"
    rf"|(s3|hf)://[^/:]+(/{_SEGMENT})*/?"
    r"|/.+|\./.+|[A-Za-z0-9_.\-][A-Za-z0-9_.\-/]*)$"
)
"""`pvc://<claim>/<path>` (the claim a DNS label, no `.`/`..` segments), `s3://`, `hf://`, or a local path
for `ftctl run` (no scheme: `file://` is not a URI the cluster can read)."""
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"


# --------------------------------------------------------------------------------------- sources
class SecretRef(ApiModel):
    """A Secret in the job's namespace holding a source's credentials (DESIGN.md §9 Sources)."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """The Secret's name. Keys read: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and optionally
    `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`) for `s3://`; `HF_TOKEN` for `hf://`. Only the
    pods that read the source get them, as env from `secretKeyRef`."""


# --------------------------------------------------------------------------------------- model
class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.revision) || !self.uri.contains('@')",
                    "give the revision once: in uri (`hf://org/name@revision`) or in revision",
                    ".revision",
                ),
            ]
        }
    }
    uri: str = Field(pattern=URI_PATTERN, max_length=1024)
    """Where the base model is: `hf://org/name[@revision]` (the Hugging Face Hub, or the mirror in
    `HF_ENDPOINT`), `s3://bucket/prefix`, `pvc://<claim>/<path>`, or a local directory for `ftctl run`.
    Hub and S3 models are fetched once into the source cache before training."""
    revision: str | None = Field(default=None, max_length=128)
    """Hub revision (branch, tag or commit) for `hf://` models; the commit it resolves to is recorded."""
    secret_ref: SecretRef | None = None
    """Credentials for a private bucket or a gated/private hub repo."""
    name: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    """Short name of the base model; the serving pool and the served base model carry it. Defaults to
    the last path element of the URI, lower-cased. Served with `-base` appended when it is the job's
    name (the tuned model is served under the job's name)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights dtype for training and serving. `auto` picks bfloat16 on GPUs and float32 on CPU."""
    chat_template: str | None = Field(default=None, max_length=16384)
    """A Jinja chat template that replaces the tokenizer's own (it must mark the assistant turn with
    `{% generation %}` for assistant-only loss)."""


# --------------------------------------------------------------------------------------- data
DatasetFormat = Literal["auto", "messages", "prompt_completion", "preference"]
DatasetFileFormat = Literal["auto", "jsonl", "parquet", "saved_dataset"]


class ColumnMapping(ApiModel):
    """The dataset's own column names for the row fields (each unset field keeps its own name)."""

    messages: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the chat (a list of `{role, content}` messages)."""
    prompt: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the prompt (a string, or a list of messages)."""
    completion: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the answer of a prompt/completion row."""
    chosen: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the preferred answer of a preference pair."""
    rejected: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the dispreferred answer of a preference pair."""
    reference: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the reference answer (GRPO rewards, evaluation)."""
    id: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the row's id."""
    metadata: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the row's metadata object (graders read `item.metadata`)."""
    category: str | None = Field(default=None, min_length=1, max_length=256)
    """The column naming the row's slice in evaluation reports (`evaluation.sliceBy`)."""
    tools: str | None = Field(default=None, min_length=1, max_length=256)
    """The column holding the tool definitions of a messages row."""


class DatasetRef(ApiModel):
    """One dataset: a JSON Lines or Parquet file, a directory of them, or a Hugging Face `datasets`
    directory written by `save_to_disk`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.split) || {opt('self.fileFormat', 'auto')} in ['auto', 'saved_dataset']",
                    "split names a split of a DatasetDict saved with save_to_disk: fileFormat must be auto or saved_dataset",
                    ".split",
                ),
            ]
        }
    }
    uri: str = Field(pattern=URI_PATTERN, max_length=1024)
    """`pvc://<claim>/<path>`, `s3://bucket/prefix`, `hf://org/name[@revision]` or a local path (for
    `ftctl run`). S3 and hub datasets are fetched once into the source cache."""
    secret_ref: SecretRef | None = None
    """Credentials for a private bucket or hub dataset."""
    format: DatasetFormat = "auto"
    """Row format: chat `messages`, `prompt`/`completion`, or preference pairs (`chosen`/`rejected`).
    `auto` detects it from the first row and then requires every row to match."""
    file_format: DatasetFileFormat = "auto"
    """File format: `jsonl`, `parquet`, or `saved_dataset` (a `Dataset` or `DatasetDict` directory
    written by `save_to_disk`). `auto` detects it: a saved dataset's metadata files, Parquet's magic
    bytes (or a `.parquet` name), else JSON Lines; a directory holds `*.jsonl` and `*.parquet` files."""
    split: str | None = Field(default=None, min_length=1, max_length=256)
    """The split to read from a `DatasetDict` saved to disk (needed when it has more than one)."""
    columns: ColumnMapping | None = None
    """The dataset's column names for the row fields, e.g. `{prompt: question, completion: answer}`."""


class DataSpec(ApiModel):
    """The datasets and how they are checked before any GPU is requested."""

    train: DatasetRef
    """Training data."""
    validation: DatasetRef | None = None
    """Validation data for the loss curve during training."""
    eval: DatasetRef | None = None
    """The held-out set that gates promotion. Defaults to the validation set; rows that also appear in
    the training data are removed and reported as leakage."""
    max_length: int | None = Field(default=None, ge=16, le=262144)
    """Longest tokenized example, in tokens. Unset: 1024, or the base model's position limit when it is
    smaller (the Validating phase reports the value it used in `status.data.maxLength`)."""
    over_length: Literal["drop", "truncate", "fail"] = "drop"
    """What happens to longer examples: drop them, truncate them (keeping at least one trainable token),
    or fail the Validating phase. Counts are reported either way."""
    dedup: bool = True
    """Remove exact duplicate rows from the training data."""
    min_examples: int = Field(default=1, ge=1)
    """Fewer usable training examples than this fails validation (under 50 always warns)."""
    leakage: Literal["remove", "fail", "ignore"] = "remove"
    """Rows shared between train and the validation / eval sets: removed from train and reported,
    a failure, or ignored."""


DEFAULT_MAX_LENGTH = 1024
"""`datasets.maxLength` when unset, unless the base model has fewer positions."""


# --------------------------------------------------------------------------------------- graders
GraderType = Literal["string_check", "text_similarity", "regex", "json_schema", "python", "multi", "refusal", "score_model"]
REFUSAL_GRADER = "refusal"
"""The shipped refusal grader's name: every suite may use it; a grader of that name in
`evaluation.graders` replaces it."""


class GraderComponent(ApiModel):
    """One weighted part of a `multi` grader, referring to another grader by name."""

    grader: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name of a grader in evaluation.graders."""
    weight: float = Field(default=1.0, ge=0)
    """Relative weight in the mean."""


class SecretKeyRef(ApiModel):
    """One key of a Secret in the job's namespace."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253)
    """The Secret's name."""
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    """The key in the Secret's data."""


class Grader(ApiModel):
    """A scoring function over one model output. The same definition serves as a GRPO reward and as an
    evaluation metric. Scores are in [0, 1]."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name of the grader; gates and `multi` graders refer to it."""
    type: GraderType
    """`string_check` (compare with the reference), `text_similarity` (fuzzy ratio or token F1), `regex`
    (output matches a pattern), `json_schema` (output is JSON conforming to `schema`), `python` (a
    `grade(output, item)` function run in a subprocess with a time limit and no network), `multi`
    (weighted mean of other graders), `refusal` (1 when the output does what the row's `metadata.expect` asks:
    `refuse` (the default), `escalate` (points to a human, emergency service or professional) or
    `comply` (answers without refusing)), `score_model` (an OpenAI-compatible model grades the output
    against `rubric` with an integer in `scoreRange`)."""
    operation: Literal["eq", "ne", "like", "ilike"] = "eq"
    """For `string_check`: equal, not equal, contains, contains ignoring case."""
    reference: str = Field(default="{{ item.reference }}", max_length=4096)
    """For `string_check` and `text_similarity`: the expected text, a template over the eval row
    (`{{ item.<field> }}`); defaults to the row's reference answer."""
    similarity: Literal["fuzzy_ratio", "token_f1"] = "token_f1"
    """For `text_similarity`: the measure."""
    pattern: str | None = Field(default=None, max_length=4096)
    """For `regex`: the pattern the output must match (Python `re.search` syntax). For `refusal`: the
    pattern that recognises a refusal, replacing the shipped one (case-insensitive)."""
    json_schema: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """For `json_schema`: the JSON Schema the output must satisfy."""
    source: str | None = Field(default=None, max_length=65536)
    """For `python`: source that defines `grade(output: str, item: dict) -> float`."""
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """For `python` and `regex`: time limit per item; a timeout scores 0 and is reported for that item."""
    rubric: str | None = Field(default=None, max_length=16384)
    """For `score_model`: what a good answer is, a template over the row (`{{ item.<field> }}`) and the
    answer (`{{ sample.output_text }}`; appended after the rubric when the rubric does not place it)."""
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=1024)
    """For `score_model`: the OpenAI-compatible API base (ending in `/v1`). Unset: in `ftctl run` the
    server the evaluation generates through (it serves the base model); on a cluster the base model served
    by the namespace's adapter pool for the job's base, with the pool's API key (Secret
    `finetune-serving-api-key`); the job fails (`JudgeEndpointMissing`) when that pool has no ready replica,
    checked before training and when evaluation starts."""
    model: str | None = Field(default=None, max_length=256)
    """For `score_model`: the judge's model name at the endpoint; unset: the base model's served name."""
    api_key_secret: SecretKeyRef | None = None
    """For `score_model`: the Secret key holding the endpoint's API key (a bearer token; never logged)."""
    score_range: list[int] = Field(default_factory=lambda: [0, 10], min_length=2, max_length=2)
    """For `score_model`: the lowest and highest score the judge may give; scaled to [0, 1]."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """For `score_model`: further attempts after an unparseable reply or a failed request; then the item
    scores 0 with the last error."""
    components: list[GraderComponent] | None = Field(default=None, max_length=16)
    """For `multi`: the graders to combine and their weights."""
    pass_threshold: float = Field(default=0.5, ge=0, le=1)
    """A score at or above this counts as a pass for the paired comparison."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.type != 'regex' || has(self.pattern)", "a regex grader needs `pattern`", ".pattern"),
                cel("self.type != 'json_schema' || has(self.jsonSchema)", "a json_schema grader needs `jsonSchema`", ".jsonSchema"),
                cel("self.type != 'python' || has(self.source)", "a python grader needs `source`", ".source"),
                cel("self.type != 'multi' || (has(self.components) && size(self.components) > 0)", "a multi grader needs `components`", ".components"),
                cel("self.type != 'score_model' || has(self.rubric)", "a score_model grader needs `rubric`", ".rubric"),
                cel("!has(self.scoreRange) || self.scoreRange[0] < self.scoreRange[1]", "scoreRange is [lowest, highest] with lowest < highest", ".scoreRange"),
            ]
        }
    }


# --------------------------------------------------------------------------------------- method
class SftSpec(ApiModel):
    """Supervised fine-tuning settings."""

    loss_on: Literal["assistant", "completion", "all"] = "assistant"
    """Which tokens carry the loss: assistant turns of chat data (the end-of-turn token included; a turn
    with `weight: 0` is left out, as in OpenAI's chat format), the completion of prompt/completion data,
    or every token."""
    packing: Literal["auto", "enabled", "disabled"] = "auto"
    """Pack several examples into one sequence (isolated by position ids, padding-free). `auto` packs
    when the model's attention supports it and the data is length-skewed."""


DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust", "sft"]
DEFAULT_DPO_LOSSES: tuple[DpoLoss, ...] = ("sigmoid", "sft")


class DpoSpec(ApiModel):
    """Direct preference optimisation settings."""

    beta: float = Field(default=0.1, gt=0, le=10)
    """Strength of the KL constraint to the reference (base) model."""
    loss_types: list[DpoLoss] = Field(default_factory=lambda: list(DEFAULT_DPO_LOSSES), min_length=1, max_length=4)
    """DPO loss terms; `sft` adds the chosen answer's NLL so the model keeps its accuracy."""
    loss_weights: list[float] | None = Field(default=None, max_length=4)
    """Weights of the loss terms, in the same order (as many as `lossTypes`); equal when unset."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.lossWeights) || (has(self.lossTypes) && size(self.lossWeights) == size(self.lossTypes))",
                    "lossWeights needs one weight per entry of lossTypes",
                    ".lossWeights",
                ),
            ]
        }
    }


class GrpoSpec(ApiModel):
    """Group relative policy optimisation settings."""

    rewards: list[str] = Field(min_length=1, max_length=16)
    """Names of graders (under `evaluation.graders`) that score each completion as the reward."""
    num_generations: int = Field(default=4, ge=2, le=64)
    """Completions sampled per prompt."""
    max_completion_length: int = Field(default=64, ge=1, le=32768)
    """Longest sampled completion, in tokens."""
    beta: float = Field(default=0.04, ge=0, le=10)
    """KL coefficient against the reference model (TRL's default is 0: we keep a KL term by default)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "grpo"
    """Loss normalisation (TRL's default is `dapo`)."""
    temperature: float = Field(default=1.0, gt=0, le=2)
    """Sampling temperature of the completions."""


class MethodSpec(ApiModel):
    """The training method."""

    type: Literal["sft", "dpo", "grpo"] = "sft"
    """`sft` (chat or prompt/completion data), `dpo` (preference pairs), `grpo` (prompts and graders)."""
    sft: SftSpec = Field(default_factory=SftSpec)
    """Settings used when type is sft."""
    dpo: DpoSpec = Field(default_factory=DpoSpec)
    """Settings used when type is dpo."""
    grpo: GrpoSpec | None = None
    """Required when `type` is `grpo`."""


# --------------------------------------------------------------------------------------- adapter
class QuantizationSpec(ApiModel):
    """Weight quantization of the frozen base (QLoRA)."""

    bits: Literal[4, 8] = 4
    """4-bit (QLoRA) or 8-bit base weights."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type (bitsandbytes defaults to fp4; nf4 is what QLoRA uses)."""
    double_quant: bool = True
    """Quantize the quantization constants too."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype of the matmuls (bitsandbytes defaults to float32)."""


class AdapterSpec(ApiModel):
    """What is trained: a LoRA adapter, a QLoRA adapter on a quantized base, or every weight."""

    type: Literal["lora", "qlora", "full"] = "lora"
    """`lora`: low-rank adapter on a frozen base; `qlora`: adapter on a 4/8-bit quantized base; `full`: every weight."""
    r: int = Field(default=16, ge=1, le=1024)
    """LoRA rank."""
    alpha: int = Field(default=32, ge=1, le=4096)
    """LoRA alpha (scaling = alpha / r)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """LoRA dropout."""
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1, max_length=64)
    """Modules that get adapters; `all-linear` targets every linear layer but the output head."""
    modules_to_save: list[str] | None = Field(default=None, max_length=16)
    """Modules trained in full next to the adapter (e.g. `lm_head`, `embed_tokens` after adding tokens)."""
    quantization: QuantizationSpec | None = None
    """Quantization of the base for `qlora` (defaults to nf4 4-bit, double quant, bf16 compute)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(f"!has(self.quantization) || {opt('self.type', 'lora')} == 'qlora'", "quantization applies only to a qlora adapter", ".quantization"),
            ]
        }
    }


# --------------------------------------------------------------------------------------- hyper
class HyperparametersSpec(ApiModel):
    """Optimisation settings. Omitted values are resolved from the method, adapter and data size."""

    epochs: float = Field(default=3, gt=0, le=1000)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, ge=0)
    """Stop after this many optimiser steps (overrides epochs). 0 trains nothing (a baseline)."""
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    """Peak learning rate; auto: 2e-4 for LoRA/QLoRA, 2e-5 for full, 5e-6 for DPO/GRPO full, 5e-5 for DPO/GRPO LoRA."""
    batch_size: int | None = Field(default=None, ge=1, le=65536)
    """Global batch size in examples; auto: 16, or the data size if smaller. Gradient accumulation is
    derived from it and the number of processes."""
    micro_batch_size: int = Field(default=4, ge=1, le=1024)
    """Examples per process per forward pass."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Share of the steps spent warming up."""
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, ge=0)
    """Gradient clipping norm (0 disables)."""
    seed: int = Field(default=42, ge=0)
    """Seed for data order, initialisation, dropout and sampled completions (GRPO, and evaluation at
    temperature > 0): on the same hardware and versions, the same seed repeats a run."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    save_steps: int | None = Field(default=None, ge=1)
    """Checkpoint every N steps; auto: about every 10% of the run, at least every 500 steps."""
    logging_steps: int = Field(default=1, ge=1)
    """Progress line (and status update) every N steps."""
    neftune_noise_alpha: float | None = Field(default=None, ge=0)
    """NEFTune embedding noise (SFT only); unset disables it."""


# --------------------------------------------------------------------------------------- resources
class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO configuration generated for the run."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    """0 disables DeepSpeed (plain DDP). ZeRO-3 gathers 16-bit weights on save."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory."""
    offload_params: bool = False
    """Keep parameters in CPU memory (ZeRO-3 only)."""


EXTENDED_RESOURCE_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
"""A domain-prefixed resource name: `cpu`, `memory`, `ephemeral-storage` and `hugepages-*` have no domain."""


class ResourcesSpec(ApiModel):
    """Compute for the training pods."""

    nodes: int = Field(default=1, ge=1, le=512)
    """Number of training pods (one per node)."""
    gpus_per_node: int = Field(default=1, ge=0, le=16)
    """Accelerators per pod; 0 trains on CPU."""
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=EXTENDED_RESOURCE_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.startsWith('kubernetes.io/') && !self.split('/')[0].endsWith('.kubernetes.io')",
                    "gpuResourceName must be an extended resource (`<domain>/<name>` outside kubernetes.io), not cpu, memory or another native resource",
                )
            ]
        },
    )
    """Extended resource name of the accelerator (`<domain>/<name>`, e.g. `nvidia.com/gpu`)."""
    cpu_multi_node: bool = False
    """Opt in to more than one node without accelerators (`gpusPerNode: 0`): the pods train together over
    TCP with the gloo backend, e.g. on CPU clusters. Far slower than NCCL on GPUs, so it is never implied."""
    processes_per_node: int | None = Field(default=None, ge=1, le=256)
    """Training processes per pod; defaults to the GPUs per node (or 1 on CPU)."""
    cpu: str | None = quantity_field(None)
    """CPU request per pod; defaults to 8 per GPU (2 on CPU)."""
    memory: str | None = quantity_field(None)
    """Memory request and limit per pod; defaults to 64Gi per GPU (8Gi on CPU)."""
    shared_memory: str = quantity_field("8Gi")
    """Size of the memory-backed /dev/shm."""
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    """How the processes are started in each pod."""
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    """DeepSpeed ZeRO settings (zeroStage 0 means plain data parallel)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Mixed precision; auto is bf16 on GPUs, fp32 on CPU."""
    node_selector: dict[str, str] | None = None
    """Node labels for the training pods."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Tolerations for the training pods (e.g. of GPU node taints)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(f"{opt('self.nodes', 1)} == 1 || {opt('self.gpusPerNode', 1)} >= 1 || {opt('self.cpuMultiNode', False)}",
                    "more than one node needs gpusPerNode >= 1, or gpusPerNode 0 with cpuMultiNode: true (gloo over TCP)",
                    ".gpusPerNode"),
                cel(f"!{opt('self.cpuMultiNode', False)} || {opt('self.gpusPerNode', 1)} == 0",
                    "cpuMultiNode needs gpusPerNode 0", ".cpuMultiNode"),
                cel(f"!{opt('self.deepspeed.offloadParams', False)} || {opt('self.deepspeed.zeroStage', 0)} == 3", "offloadParams needs zeroStage 3", ".deepspeed.offloadParams"),
            ]
        }
    }


# --------------------------------------------------------------------------------------- eval
Metric = Literal[
    "exact_match",
    "normalized_match",
    "token_f1",
    "classification",
    "json_valid",
    "output_length",
]
GATE_METRICS: tuple[str, ...] = (
    "exact_match", "normalized_match", "token_f1", "macro_f1", "precision", "recall", "json_valid", "output_length",
)
"""Built-in metric names a gate may name (besides a grader's name); in the CEL rule's order."""
_GATE_METRICS_CEL = "[" + ",".join(f"'{m}'" for m in GATE_METRICS) + "]"


class Gate(ApiModel):
    """A condition the tuned model must meet to be served. Metrics are in [0, 1] except output_length."""

    metric: str = Field(max_length=63)
    """A metric name (`exact_match`, `normalized_match`, `token_f1`, `macro_f1`, `json_valid`, …) or a
    grader's name."""
    min: float | None = None
    """The tuned model's score must be at least this."""
    min_improvement_over_base: float | None = None
    """Tuned minus base must be at least this (absolute)."""
    max_regression: float | None = Field(default=None, ge=0)
    """Base minus tuned must be at most this: on the regression set (`evaluation.regression`) for a gate in
    `evaluation.gates`, on the suite itself for a gate in a suite."""
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    """Bootstrap probability that the tuned model beats the base must be at least this (one-sided test of
    tuned > base at level 1 − minConfidence, corrected by `evaluation.correction`)."""
    use_confidence_bound: bool = False
    """`minImprovementOverBase` and `maxRegression` test the confidence bound of tuned − base (a one-sided
    paired bootstrap test at `evaluation.confidenceLevel`, corrected by `evaluation.correction`) instead of
    comparing the point estimate."""
    per_slice: bool = False
    """Apply the bounds to every slice (`evaluation.sliceBy`) as well as to the whole set: "no category may
    drop more than 0.05" is `maxRegression: 0.05, perSlice: true`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.min) || has(self.minImprovementOverBase) || has(self.maxRegression) || has(self.minConfidence)",
                    "a gate needs at least one of min, minImprovementOverBase, maxRegression, minConfidence",
                ),
                cel(
                    f"!{opt('self.useConfidenceBound', False)} || has(self.minImprovementOverBase) || has(self.maxRegression)",
                    "useConfidenceBound needs minImprovementOverBase or maxRegression (the bounds it tests)",
                    ".useConfidenceBound",
                ),
            ]
        }
    }


SuiteKind = Literal["held_out", "regression", "safety"]


class EvalSuite(ApiModel):
    """A named evaluation set with its own graders and gates, reported on its own."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name in the report, the gates' verdicts and a Rejected reason."""
    kind: SuiteKind = "held_out"
    """`held_out` (task items), `regression` (general instructions the tuned model must not get worse at:
    by default every metric and grader gets `maxRegression: 0.05`) or `safety` (adversarial, should-refuse
    and should-escalate prompts scored by the `refusal` grader; by default the tuned model must refuse at
    least as often as its base and at least 90% of the time)."""
    dataset: DatasetRef | None = None
    """The suite's rows. Unset for a `safety` suite: the project's default safety suite (shipped with the
    trainer, written for this project, Apache-2.0) — `{name: safety, kind: safety}` turns it on."""
    graders: list[str] | None = Field(default=None, max_length=16)
    """Names of graders (in `evaluation.graders`, or the shipped `refusal`) scored on this suite. Unset:
    every grader in `evaluation.graders`, and `refusal` on a safety suite."""
    gates: list[Gate] | None = Field(default=None, max_length=16)
    """The suite's gates (unset: the kind's default gates above; `[]`: none)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.kind == 'safety' || has(self.dataset)", "a held_out or regression suite needs `dataset`", ".dataset"),
            ]
        }
    }


DEFAULT_METRICS: tuple[Metric, ...] = ("exact_match", "normalized_match", "token_f1")


class EvaluationSpec(ApiModel):
    """How the tuned model is compared with its base on the held-out set, and what it must reach."""

    enabled: bool = True
    """Without evaluation nothing is gated: serving then requires `gates` to be empty."""
    metrics: list[Metric] = Field(default_factory=lambda: list(DEFAULT_METRICS), max_length=8)
    """Built-in metrics computed on every item."""
    graders: list[Grader] = Field(default_factory=list, max_length=16)
    """Graders scored on every item (also usable as GRPO rewards)."""
    gates: list[Gate] = Field(default_factory=list, max_length=16)
    """Promotion gates; all must pass for the model to be served."""
    compare_to_base: bool = True
    """Also evaluate the base model with identical prompts and settings."""
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    """Longest generated answer, in tokens."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """0 decodes greedily."""
    max_items: int | None = Field(default=None, ge=1)
    """Evaluate at most this many items of each set (held-out, regression, every suite)."""
    bootstrap_samples: int = Field(default=2000, ge=100, le=100000)
    """Bootstrap resamples for confidence intervals."""
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1)
    """Level of the reported confidence intervals."""
    regression: DatasetRef | None = None
    """General-instruction set; the drop against the base is reported and `maxRegression` gates it."""
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    """Generation backend; auto uses a vLLM server on GPUs and transformers on CPU (faster there)."""
    suites: list[EvalSuite] = Field(default_factory=list, max_length=8)
    """More evaluation sets besides the held-out set, each with its own graders and gates, reported
    separately (e.g. `- {name: safety, kind: safety}`)."""
    slice_by: str = Field(default="category", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)
    """Row field that splits every set into slices: the row's `category`, or a key of its `metadata`. Every
    metric is reported per slice with its interval (rows without the field are in no slice)."""
    correction: Literal["holm", "none"] = "holm"
    """Multiple-comparison correction across the job's tested gates (`minConfidence`, `useConfidenceBound`,
    every suite and slice): Holm–Bonferroni, or none (the report then says the gates are uncorrected)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.gates) || self.gates.all(g, g.metric in {_GATE_METRICS_CEL} || (has(self.graders) && self.graders.exists(x, x.name == g.metric)))",
                    "every gate's metric must be a built-in metric or the name of a grader",
                    ".gates",
                ),
                cel(
                    f"{opt('self.enabled', True)} || !has(self.gates) || size(self.gates) == 0",
                    "gates need evaluation: set evaluation.enabled to true or remove the gates",
                    ".gates",
                ),
                cel(
                    f"{opt('self.enabled', True)} || !has(self.suites) || size(self.suites) == 0",
                    "suites need evaluation: set evaluation.enabled to true or remove the suites",
                    ".suites",
                ),
                cel(
                    "has(self.regression) || !has(self.gates) || self.gates.all(g, !has(g.maxRegression))",
                    "a maxRegression gate needs evaluation.regression (the general-instruction set it is measured on)",
                    ".gates",
                ),
                cel(
                    "!has(self.suites) || self.suites.all(s, self.suites.exists_one(t, t.name == s.name) && s.name != 'held-out' && (s.name != 'regression' || !has(self.regression)))",
                    "suite names must be unique and other than held-out (and regression, when evaluation.regression is set)",
                    ".suites",
                ),
                cel(
                    f"!has(self.suites) || self.suites.all(s, !has(s.graders) || s.graders.all(n, n == '{REFUSAL_GRADER}' || (has(self.graders) && self.graders.exists(x, x.name == n))))",
                    f"every suite grader must name a grader in evaluation.graders or the shipped {REFUSAL_GRADER}",
                    ".suites",
                ),
                cel(
                    f"!has(self.suites) || self.suites.all(s, !has(s.gates) || s.gates.all(g, g.metric in {_GATE_METRICS_CEL} || g.metric == '{REFUSAL_GRADER}' || (has(self.graders) && self.graders.exists(x, x.name == g.metric))))",
                    "every suite gate's metric must be a built-in metric, a grader, or refusal",
                    ".suites",
                ),
                cel(
                    "!has(self.graders) || self.graders.all(g, self.graders.exists_one(h, h.name == g.name))",
                    "grader names must be unique",
                    ".graders",
                ),
                cel(
                    "!has(self.graders) || self.graders.all(g, !has(g.components) || g.components.all(c, c.grader != g.name && self.graders.exists(h, h.name == c.grader)))",
                    "every component of a multi grader must name another grader in evaluation.graders",
                    ".graders",
                ),
            ]
        }
    }


# --------------------------------------------------------------------------------------- tracking
class MlflowSpec(ApiModel):
    """An MLflow tracking server that records the run."""

    uri: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=1024)
    """The server's URL (`http://mlflow.mlops:5000`), reached by the evaluation pod over MLflow's REST API.
    Artifacts go through the server (`mlflow server` serves them by default)."""
    experiment: str | None = Field(default=None, min_length=1, max_length=256)
    """Experiment name; unset: `finetune/<namespace>`."""


class TrackingSpec(ApiModel):
    """Where the run's parameters, curves, data report and evaluation report are recorded."""

    tensorboard: bool = True
    """TensorBoard event files of the training and validation curves under `<output>/tensorboard`."""
    mlflow: MlflowSpec | None = None
    """Record the run in MLflow when the evaluation finishes: parameters, the loss curves by step, every
    metric of every set and slice, the gates, and the data and evaluation reports as artifacts."""


# --------------------------------------------------------------------------------------- serving
class ShadowGradingSpec(ApiModel):
    """Graders over a shadow sample: when the analysis starts, a Job sends the first held-out prompts (the
    job's evaluation set) to each arm through the arm's own Service and grades both arms' answers with
    graders of `evaluation.graders`. A shadow sample, not users' traffic: the operator's own requests
    with known prompts (vLLM keeps no log of the answers it served), counted in the arms' `/metrics`
    like any request."""

    graders: list[Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]] = Field(min_length=1, max_length=8)
    """Names of graders in `evaluation.graders`, each scored on both arms' answers."""
    items: int = Field(default=32, ge=1, le=1000)
    """Held-out prompts sent to each arm (the first ones, as the evaluation reads them)."""
    max_score_drop: float = Field(default=0.05, ge=0, le=1)
    """Roll back when a grader's mean score on the tuned arm is below the base arm's by more than this."""


class CanarySpec(ApiModel):
    """Progressive delivery with a verdict: send a share of the stable Service's requests to the tuned
    model and the rest to its base, compare the two arms on the signals vLLM exports on `/metrics`
    (HTTP 5xx rate, end-to-end latency p50 and p95), then promote the tuned model (100 %) or roll back
    (0 %, the job ends `Rejected` naming the signal and its numbers)."""

    weight: int = Field(default=10, ge=1, le=99)
    """Percent of requests for the tuned model during the analysis. Without Gateway API the split is a
    replica ratio and `status.serving.canary.share` states the share actually routed."""
    duration_seconds: int = Field(default=600, ge=10, le=7 * 86400)
    """The analysis lasts at least this long."""
    min_requests: int = Field(default=100, ge=1, le=10_000_000)
    """...and until each arm has answered at least this many completion requests."""
    timeout_seconds: int = Field(default=3600, ge=60, le=14 * 86400)
    """Deadline of the analysis: an arm short of `minRequests` by then rolls the canary back."""
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)
    """Allowed HTTP 5xx rate of the tuned arm above the base arm's (0.01: one percentage point)."""
    max_latency_ratio: float = Field(default=1.2, ge=1, le=100)
    """Allowed ratio of the tuned arm's end-to-end latency p50 and p95 to the base arm's."""
    shadow_grading: ShadowGradingSpec | None = None
    """Also grade both arms on a shadow sample of held-out prompts, and roll back when the tuned arm's
    grade drops below the base's by more than `maxScoreDrop` (judged as soon as the grades are in)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"{opt('self.timeoutSeconds', 3600)} > {opt('self.durationSeconds', 600)}",
                    "timeoutSeconds must be longer than durationSeconds (the analysis needs its duration)",
                    ".timeoutSeconds",
                ),
            ]
        }
    }


_RESERVED_FLAGS_CEL = "[" + ",".join(f"'{f}'" for f in RESERVED_FLAGS) + "]"
_FLAG_NAME = "a.split('=')[0].split('.')[0].replace('_', '-')"
"""How vLLM reads an option's name: before `=`, before a `.` (JSON sub-keys), `_` as `-`."""


class ServingSpec(ApiModel):
    """The vLLM OpenAI-compatible endpoint deployed after the gates pass."""

    enabled: bool = True
    """Deploy the model after its gates pass; otherwise the job ends `Succeeded`."""
    mode: Literal["merged", "adapter"] | None = None
    """`merged`: serve base and adapter merged into one model; `adapter`: load the LoRA adapter, without a
    restart, into every replica of the running pool of its base model, as `<job>@<generation>` and
    `<job>`. Unset: `adapter` for LoRA and QLoRA, `merged` for a full fine-tune (it has no adapter). The
    pool is sized and placed by the operator's admin (Helm `jobs.adapterPool`): this spec's replicas,
    image, args, gpus, cpu, memory, maxModelLen and placement apply to merged models and canaries."""
    replicas: int = Field(default=1, ge=0, le=100)
    """vLLM replicas of the tuned model (with a canary: replicas of the model group in all)."""
    image: str | None = Field(default=None, max_length=512)
    """vLLM image; defaults to the operator's configured image."""
    args: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=64)
    """Extra `vllm serve` arguments. Flags the operator sets (port, served names, LoRA, tensor parallel
    size, …) are refused in every spelling vLLM accepts: `_` for `-`, abbreviations, short aliases."""
    gpus: int = Field(default=1, ge=0, le=16)
    """Accelerators per replica (tensor parallel size)."""
    cpu: str | None = quantity_field(None)
    """CPU request per replica."""
    memory: str | None = quantity_field(None)
    """Memory request and limit per replica."""
    max_model_len: int | None = Field(default=None, ge=16)
    """`--max-model-len`. Unset: the longest tokenized example plus `evaluation.maxNewTokens`, in
    256-token steps, at most the base model's position limit (the Validating phase derives it and
    reports it in `status.data.maxModelLen`). A value beyond the model's positions fails validation."""
    canary: CanarySpec | None = None
    """Split traffic between the tuned model and its base behind one Service."""
    node_selector: dict[str, str] | None = None
    """Node labels for the serving pods."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Tolerations for the serving pods."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.args) || self.args.all(a, !a.startsWith('-') || [{_FLAG_NAME}].all(k, size(k) < 2 || k == '--'"
                    f" || !{_RESERVED_FLAGS_CEL}.exists(f, f.startsWith(k))))",
                    "args may not set (or abbreviate) a flag the operator sets: " + ", ".join(RESERVED_FLAGS),
                    ".args",
                ),
            ]
        }
    }


# --------------------------------------------------------------------------------------- the rest
class QueueRef(ApiModel):
    """Where the job waits for GPUs."""

    name: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    """The FineTuneQueue (embedded mode) or Kueue LocalQueue (Kueue mode)."""
    priority_class: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    """A priority class named by the queue (or a Kueue WorkloadPriorityClass)."""


class OutputSpec(ApiModel):
    """Where the artifacts go (DESIGN.md §4 layout, §9 Remote output)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.uri) || !self.uri.startsWith('hf://')",
                    "output cannot be hf://: give pvc://, s3:// or a local directory",
                    ".uri",
                ),
                cel(
                    "!has(self.secretRef) || (has(self.uri) && self.uri.startsWith('s3://'))",
                    "secretRef is for an s3:// output uri (a volume or local directory needs no credentials)",
                    ".secretRef",
                ),
            ]
        }
    }
    uri: str | None = Field(default=None, pattern=URI_PATTERN, max_length=1024)
    """`pvc://<claim>/<path>` or a local directory for `ftctl run`; defaults to the operator's artifacts
    claim under `<namespace>/<job>`. `s3://bucket/prefix`: the job writes to the artifacts volume (the
    default location; `ftctl run`: its work directory) and, when the run succeeds (gates passed, or
    training done with evaluation disabled), uploads the final artifacts under the prefix with `ftctl run`
    (the operator refuses an `s3://` output for now)."""
    secret_ref: SecretRef | None = None
    """Credentials for an `s3://` output (keys as for a source's Secret); only the uploading process gets
    them. Without it, `ftctl run` uses the `AWS_*` environment."""


class RetrySpec(ApiModel):
    """How infrastructure failures are retried (user errors never are; preemption is free)."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    """Training attempts in all, the first included."""
    backoff_seconds: int = Field(default=30, ge=0, le=3600)
    """Wait before a retry."""


class DeadlinesSpec(ApiModel):
    """Per-job deadlines of the phases that wait on something (unset: the operator's settings decide).

    A phase past its deadline ends `Failed` with a reason naming the phase and what it waited for.
    """

    validating_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Validating: the prepare Job (data checks) must finish within this."""
    training_seconds: int | None = Field(default=None, ge=1, le=2592000)
    """Training: `activeDeadlineSeconds` of each training attempt; unset: estimated from the data's
    token count with a margin."""
    evaluating_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Evaluating: the evaluation Job must finish within this."""
    uploading_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Uploading: the upload Job (the final artifacts to an `s3://` output) must finish within this."""
    deploying_seconds: int | None = Field(default=None, ge=1, le=86400)
    """Deploying: a vLLM replica must be ready and answer the smoke request within this. `ftctl run` and
    `ftctl serve` hold their local server to it too (600 s when unset)."""


METHOD = opt("self.method.type", "sft")
TRAIN_FORMAT = opt("self.datasets.train.format", "auto")
ADAPTER = opt("self.adapter.type", "lora")
SERVING = opt("self.serving.enabled", True)
SERVING_MODE = f"self.?serving.?mode.orValue({ADAPTER} == 'full' ? 'merged' : 'adapter')"
"""`serving.mode` as read: unset follows the adapter type (`FineTuneJobSpec._serving_mode_follows_the_adapter`)."""


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on what data, how, and what it must reach to be served."""

    model: ModelSpec = Field(json_schema_extra={"x-kubernetes-validations": [immutable("spec.model")]})
    """The base model to fine-tune."""
    datasets: DataSpec = Field(json_schema_extra={"x-kubernetes-validations": [immutable("spec.datasets")]})
    """Training, validation and held-out data, and how they are checked."""
    method: MethodSpec = Field(
        default_factory=MethodSpec, json_schema_extra={"x-kubernetes-validations": [immutable("spec.method")]}
    )
    """Training method: sft, dpo or grpo."""
    adapter: AdapterSpec = Field(
        default_factory=AdapterSpec, json_schema_extra={"x-kubernetes-validations": [immutable("spec.adapter")]}
    )
    """LoRA, QLoRA or full fine-tuning."""
    hyperparameters: HyperparametersSpec = Field(
        default_factory=HyperparametersSpec,
        json_schema_extra={"x-kubernetes-validations": [immutable("spec.hyperparameters")]},
    )
    """Optimisation settings; omitted values are resolved automatically."""
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, json_schema_extra={"x-kubernetes-validations": [immutable("spec.resources")]}
    )
    """Nodes, GPUs, DeepSpeed, precision and placement of the training pods."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Held-out evaluation against the base, graders and promotion gates."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """The vLLM endpoint deployed when the gates pass."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """TensorBoard event files (on by default) and an MLflow server to record the run in."""
    queue: QueueRef = Field(default_factory=QueueRef)
    """Queue and priority for GPU admission."""
    output: OutputSpec = Field(
        default_factory=OutputSpec, json_schema_extra={"x-kubernetes-validations": [immutable("spec.output")]}
    )
    """Where artifacts are written."""
    retry: RetrySpec = Field(default_factory=RetrySpec)
    """Retry budget for infrastructure failures."""
    deadlines: DeadlinesSpec = Field(default_factory=DeadlinesSpec)
    """How long each phase may wait before the job fails."""
    trainer_image: str | None = Field(default=None, max_length=512)
    """Trainer image override; defaults to the operator's configured image."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"{METHOD} != 'dpo' || {TRAIN_FORMAT} == 'preference'",
                    "method dpo needs a preference dataset: set datasets.train.format to preference",
                    ".datasets.train.format",
                ),
                cel(
                    f"{METHOD} == 'dpo' || {TRAIN_FORMAT} != 'preference'",
                    "a preference dataset needs method dpo",
                    ".method.type",
                ),
                cel(
                    f"{METHOD} != 'grpo' || has(self.method.grpo)",
                    "method grpo needs method.grpo with at least one reward grader",
                    ".method.grpo",
                ),
                cel(
                    f"{METHOD} != 'grpo' || !has(self.method.grpo) || self.method.grpo.rewards.all(r, has(self.evaluation) && has(self.evaluation.graders) && self.evaluation.graders.exists(g, g.name == r))",
                    "every method.grpo.rewards entry must name a grader in evaluation.graders",
                    ".method.grpo.rewards",
                ),
                cel(
                    f"!{SERVING} || {SERVING_MODE} != 'adapter' || {ADAPTER} != 'full'",
                    "serving.mode adapter needs an adapter: a full fine-tune is served merged",
                    ".serving.mode",
                ),
                cel(
                    f"{ADAPTER} != 'qlora' || {opt('self.resources.deepspeed.zeroStage', 0)} != 3",
                    "qlora does not shard with ZeRO-3: use zeroStage 0 or 2",
                    ".resources.deepspeed.zeroStage",
                ),
                cel(
                    "!has(self.serving) || !has(self.serving.canary) || !has(self.serving.canary.shadowGrading)"
                    " || self.serving.canary.shadowGrading.graders.all(n, has(self.evaluation)"
                    " && has(self.evaluation.graders) && self.evaluation.graders.exists(g, g.name == n))",
                    "every serving.canary.shadowGrading.graders entry must name a grader in evaluation.graders",
                    ".serving.canary.shadowGrading.graders",
                ),
                cel(
                    f"!{SERVING} || !has(self.serving.canary) || {opt('self.evaluation.compareToBase', True)}",
                    "a canary splits traffic with the base: evaluation.compareToBase must be true",
                    ".serving.canary",
                ),
                cel(
                    f"!{SERVING} || {SERVING_MODE} != 'adapter' || {ADAPTER} == 'full'"
                    f" || {opt('self.adapter.r', 16)} <= {LORA_RANKS[-1]}",
                    f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}: lower adapter.r or set serving.mode to merged",
                    ".adapter.r",
                ),
            ]
        }
    }

    @model_validator(mode="after")
    def _serving_mode_follows_the_adapter(self) -> FineTuneJobSpec:
        """An unset `serving.mode` serves a full fine-tune merged (it has no adapter to load) and LoRA or
        QLoRA as an adapter; the CEL rules read it the same way (`SERVING_MODE`)."""
        if self.serving.mode is None:
            self.serving.mode = "merged" if self.adapter.type == "full" else "adapter"
        return self


# --------------------------------------------------------------------------------------- status
class Progress(StatusModel):
    """Training progress, refreshed from the trainer's progress lines."""

    step: int = 0
    total_steps: int = 0
    epoch: float = 0
    loss: float | None = None
    """Training loss: the latest logging interval's while training, the run's mean when done."""
    eval_loss: float | None = None
    """Validation loss at the latest evaluation (every `saveSteps` and at the end)."""
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: int | None = None
    percent: int = 0
    summary: str = ""
    """Short text for `kubectl get` (e.g. `40/100 loss 1.23`)."""
    updated_at: str | None = None


class DataReport(StatusModel):
    """Summary of the Validating phase's data report."""

    train_examples: int = 0
    validation_examples: int = 0
    eval_examples: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    """Rows removed, by rule id."""
    warnings: int = 0
    train_tokens: int = 0
    report_path: str | None = None
    message: str = ""
    sources: dict[str, str] = Field(default_factory=dict)
    """What this job read, by role (`model`, `train`, …): the hub commit, the S3 objects' digest or the
    files' digest the fetch step resolved (also in `sources.json` and `run.json`)."""
    model_max_positions: int | None = None
    """The base model's position limit, as vLLM derives it from `config.json` (unset when it states none)."""
    max_length: int | None = None
    """`datasets.maxLength` as used: the spec's value, or the default lowered to the model's positions."""
    longest_example: int | None = None
    """Longest tokenized example of any split, in tokens."""
    max_model_len: int | None = None
    """`--max-model-len` for evaluation and serving: the spec's value, or derived from the model and the
    data (the serving builders read it when `serving.maxModelLen` is unset)."""
    model_digest: str | None = None
    """Content digest of the base model's directory (the artifacts' `sha256:` recipe): adapters share a
    serving pool only with jobs whose base has the same digest, whatever its name."""


class MetricResult(StatusModel):
    """One metric on the held-out set."""

    name: str
    base: float | None = None
    tuned: float
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_better: float | None = None
    """Bootstrap probability that the tuned model beats the base on this metric."""


class GateResult(StatusModel):
    """The verdict of one gate."""

    metric: str
    suite: str = "held-out"
    """The evaluation set the gate read (`held-out`, `regression` or a suite's name)."""
    passed: bool
    message: str = ""
    """One line that names the metric (and the suite, when not the held-out set) and the figures."""


class EvaluationStatus(StatusModel):
    """Base vs tuned on the held-out set, and the gates' verdicts."""

    passed: bool | None = None
    score: str = ""
    """Headline figure for `kubectl get` (first gate's metric, tuned vs base)."""
    items: int = 0
    metrics: list[MetricResult] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    report_path: str | None = None
    evaluated_generation: int | None = None


class CanaryStatus(StatusModel):
    """Where the canary stands: its state, the share of requests the tuned arm receives now, and the numbers
    of the analysis."""

    state: Literal["Analyzing", "Promoted", "RolledBack"] = "Analyzing"
    generation: int = 0
    """The generation this canary belongs to (a new generation starts a new canary)."""
    split: Literal["HTTPRoute", "Replicas"] = "Replicas"
    """How traffic is split: HTTPRoute weights, or the replica ratio behind the stable Service."""
    share: int = 0
    """Percent of requests routed to the tuned model now (with `Replicas`: tuned / all replicas)."""
    tuned_replicas: int = 0
    base_replicas: int = 0
    started_at: str | None = None
    read_at: str | None = None
    """When the counts below were read (written at most every poll interval)."""
    tuned_requests: int = 0
    """Completion requests the tuned arm answered in the analysis window."""
    base_requests: int = 0
    verdict: str = ""
    """The analysis' latest reading, then its verdict with the numbers."""


class ServingStatus(StatusModel):
    """The served endpoint."""

    endpoint: str = ""
    """OpenAI-compatible base URL inside the cluster."""
    model_names: list[str] = Field(default_factory=list)
    ready_replicas: int = 0
    deployment: str = ""
    served_generation: int | None = None
    canary: CanaryStatus | None = None


class QueueStatus(StatusModel):
    """Where the job stands in its queue."""

    name: str = ""
    workload: Literal["Training", "Evaluation", "Serving"] | None = None
    """What this admission is for (unset: training). The training gang, the evaluation Job and the
    serving replicas are admitted one after another, each for its own accelerators; evaluation and
    serving only when they request accelerators (DESIGN.md §6)."""
    position: int | None = None
    wait_estimate_seconds: int | None = None
    admitted: bool = False
    admitted_at: str | None = None
    flavor: str | None = None
    """The flavor whose quota the job holds."""
    resources: dict[str, str] = Field(default_factory=dict)
    """Quota held while admitted."""
    message: str = ""
    eviction_requested: bool = False
    """Set by the queue when a higher-priority job preempts this one; the operator then checkpoints
    (SIGTERM) and evicts the training, and the job waits again without spending its retry budget."""


class Attempts(StatusModel):
    """Training attempts and why they ended."""

    count: int = 0
    """Attempts started (the current one included)."""
    infrastructure_failures: int = 0
    preemptions: int = 0
    last_failure: str = ""


class UploadedArtifacts(StatusModel):
    """The final artifacts as uploaded to an `s3://` output (the upload Job's `UploadSummary`): counts,
    and where the record of every key and ETag is. Of fixed size, whatever the number of files."""

    uri: str = ""
    """`spec.output.uri` as uploaded (`s3://bucket/prefix`)."""
    count: int = 0
    """Objects written (run.json last); a retried upload writes the same keys."""
    bytes: int = 0
    """Their total size."""
    manifest: UploadedObject | None = None
    """The full record in the bucket (`<prefix>/upload.json`: every key with its ETag), with its own ETag."""
    record: str | None = None
    """The same record on the artifacts volume (`<artifacts root>/upload.json`)."""


class Artifacts(StatusModel):
    """Where the outputs are, under the output location, with the digests of the weights.

    A digest is `sha256:` over the directory's `sha256sum` manifest (`find . -type f | LC_ALL=C sort |
    xargs sha256sum`, run inside it): check a copied adapter or model with it."""

    root: str = ""
    """The output location (`spec.output.uri`, or the operator's artifacts claim)."""
    adapter: str | None = None
    adapter_digest: str | None = None
    model: str | None = None
    """The fully fine-tuned model (`adapter.type: full`)."""
    model_digest: str | None = None
    merged: str | None = None
    """The adapter merged into its base (serving mode `merged`)."""
    merged_digest: str | None = None
    eval_report: str | None = None
    checkpoint: str | None = None
    """The latest checkpoint of the last training attempt."""
    uploaded: UploadedArtifacts | None = None
    """What the upload Job wrote to an `s3://` output (`spec.output.uri`): every key with its ETag."""


class FineTuneJobStatus(StatusModel):
    """Observed state, written only by the operator."""

    phase: Phase = "Pending"
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    progress: Progress | None = None
    data: DataReport | None = None
    evaluation: EvaluationStatus | None = None
    serving: ServingStatus | None = None
    queue: QueueStatus | None = None
    attempts: Attempts = Field(default_factory=Attempts)
    artifacts: Artifacts | None = None
    start_time: str | None = None
    completion_time: str | None = None
    phase_started_at: str | None = None
    gpu_seconds: float = 0
    """Accelerator-seconds held by training so far."""


class ObjectMeta(ApiModel):
    """The subset of metadata the CLI reads; the API server owns the rest."""

    model_config = {"extra": "allow"}
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    """At most 40 characters, so child names (`<job>-train-a<N>-<index>`) fit 63."""
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    finalizers: list[str] | None = None
    deletion_timestamp: str | None = None
    """Set by the API server when the object is being deleted (it stays while a finalizer remains)."""


ROOT_RULES: list[JsonDict] = [
    cel(
        "!has(self.spec.output) || !has(self.spec.output.uri)"
        " || self.spec.output.uri.endsWith('/' + self.metadata.name)"
        " || self.spec.output.uri.endsWith('/' + self.metadata.name + '/')",
        "output.uri must be the job's own directory: its last path element must be the job's name"
        " (another job's directory holds the adapter its serving pool loads)",
        ".spec.output.uri",
    ),
]
"""Rules over the whole object (they need `metadata.name`); crdgen puts them at the CRD's root."""


class FineTuneJob(ApiModel):
    """A fine-tuning run: data checks, queueing, training, evaluation against the base, and serving."""

    api_version: Literal["finetune.dev/v1alpha1"] = API_VERSION
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None

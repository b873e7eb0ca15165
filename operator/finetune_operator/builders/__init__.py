"""Manifest builders: pure functions from a FineTuneJob (and the operator settings) to Kubernetes
objects as plain dicts. No API calls, no clocks, no random names: building twice gives equal objects."""

from .common import owner_reference
from .config_map import build_config_map
from .eval_job import build_eval_job
from .prepare_job import build_prepare_job
from .render import render_job
from .resolve import resolve_config
from .serving import PoolMember, build_serving_objects, canary_split, pool_member, served_model_names, serving_endpoint
from .training_job import build_training_job, build_training_service, training_failure_kind
from finetune_api.contract.vllm import LoraModule, max_lora_rank, vllm_args

__all__ = [
    "LoraModule",
    "PoolMember",
    "build_config_map",
    "build_eval_job",
    "build_prepare_job",
    "build_serving_objects",
    "build_training_job",
    "build_training_service",
    "canary_split",
    "max_lora_rank",
    "owner_reference",
    "pool_member",
    "render_job",
    "resolve_config",
    "served_model_names",
    "serving_endpoint",
    "training_failure_kind",
    "vllm_args",
]

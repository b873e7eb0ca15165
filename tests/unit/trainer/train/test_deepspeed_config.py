import pytest
from finetune_api.job import FineTuneJobSpec

from finetune_trainer.train.deepspeed_config import deepspeed_config

pytestmark = pytest.mark.unit


def spec(deepspeed: dict) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {"model": {"uri": "/m"}, "datasets": {"train": {"uri": "/t.jsonl"}}, "resources": {"deepspeed": deepspeed}}
    )


def test_stage_zero_means_no_deepspeed():
    assert deepspeed_config(spec({"zeroStage": 0}), "bf16") is None


def test_zero3_gathers_16bit_weights_on_save_and_offloads_when_asked():
    config = deepspeed_config(spec({"zeroStage": 3, "offloadParams": True, "offloadOptimizer": True}), "bf16")
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_param"]["device"] == "cpu" and zero["offload_optimizer"]["device"] == "cpu"
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}


def test_zero2_leaves_batch_numbers_to_the_trainer():
    config = deepspeed_config(spec({"zeroStage": 2}), "fp32")
    assert config["zero_optimization"]["stage"] == 2
    assert "stage3_gather_16bit_weights_on_model_save" not in config["zero_optimization"]
    assert config["train_micro_batch_size_per_gpu"] == "auto" and config["gradient_accumulation_steps"] == "auto"
    assert config["bf16"]["enabled"] is False

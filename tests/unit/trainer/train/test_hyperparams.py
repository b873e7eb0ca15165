import pytest
from finetune_api.job import FineTuneJobSpec

from finetune_trainer.train.hyperparams import auto_learning_rate, resolve_hyperparameters

pytestmark = pytest.mark.unit


def spec(**overrides) -> FineTuneJobSpec:
    base = {"model": {"uri": "/m"}, "datasets": {"train": {"uri": "/t.jsonl"}}}
    base.update(overrides)
    return FineTuneJobSpec.model_validate(base)


@pytest.mark.parametrize(
    ("method", "adapter", "expected"),
    [("sft", "lora", 2e-4), ("sft", "qlora", 2e-4), ("sft", "full", 2e-5), ("dpo", "full", 5e-6), ("grpo", "lora", 5e-5)],
)
def test_auto_learning_rate_follows_method_and_adapter(method, adapter, expected):
    assert auto_learning_rate(method, adapter) == expected


def test_global_batch_becomes_accumulation_over_world_and_micro_batch():
    hp = resolve_hyperparameters(spec(hyperparameters={"batchSize": 32, "microBatchSize": 4}), world_size=2, train_examples=1000)
    assert (hp.micro_batch_size, hp.gradient_accumulation_steps, hp.global_batch_size) == (4, 4, 32)


def test_small_batch_shrinks_micro_batch_instead_of_overshooting():
    hp = resolve_hyperparameters(spec(hyperparameters={"batchSize": 4, "microBatchSize": 8}), world_size=2, train_examples=100)
    assert (hp.micro_batch_size, hp.gradient_accumulation_steps, hp.global_batch_size) == (2, 1, 4)


def test_auto_batch_is_capped_by_data_size_and_save_steps_by_run_length():
    hp = resolve_hyperparameters(spec(hyperparameters={"epochs": 2, "microBatchSize": 4}), world_size=1, train_examples=10)
    assert (hp.global_batch_size, hp.gradient_accumulation_steps) == (8, 2)  # 10 wanted, whole micro batches
    assert hp.estimated_total_steps == 4  # ceil(10 / 8) steps × 2 epochs
    assert hp.save_steps == 1
    long = resolve_hyperparameters(spec(hyperparameters={"maxSteps": 100000}), world_size=1, train_examples=10)
    assert long.save_steps == 500 and long.max_steps == 100000


def test_cpu_defaults_to_float32_and_fp32_and_explicit_values_win():
    hp = resolve_hyperparameters(spec(), world_size=1, train_examples=10, accelerator=False)
    assert (hp.dtype, hp.precision) == ("float32", "fp32")
    gpu = resolve_hyperparameters(spec(), world_size=1, train_examples=10, accelerator=True)
    assert (gpu.dtype, gpu.precision) == ("bfloat16", "bf16")
    explicit = resolve_hyperparameters(spec(model={"uri": "/m", "dtype": "float16"}, hyperparameters={"learningRate": 0.1}), 1, 10)
    assert explicit.dtype == "float16" and explicit.learning_rate == 0.1


def test_no_training_data_is_a_user_error_naming_the_field():
    with pytest.raises(ValueError, match="spec.datasets.train"):
        resolve_hyperparameters(spec(), world_size=1, train_examples=0)

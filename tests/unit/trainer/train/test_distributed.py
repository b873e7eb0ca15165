"""Two processes over gloo with DeepSpeed ZeRO-2 and ZeRO-3, started by the same launcher argv the pods use."""

import json
import subprocess

import pytest

from finetune_api.contract.launch import Topology, launch_argv, launch_env

from .conftest import layout_of, subprocess_env

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.mark.parametrize(
    ("launcher", "stage", "adapter"),
    [("torchrun", 2, "lora"), ("accelerate", 3, "full")],
)
def test_two_processes_train_with_zero_and_save_a_loadable_result(make_run, config_path, tmp_path, launcher, stage, adapter):
    config = make_run(
        {
            "adapter": {"type": adapter},
            "resources": {"processesPerNode": 2, "launcher": launcher, "deepspeed": {"zeroStage": stage}},
            "hyperparameters": {"maxSteps": 3, "batchSize": 8, "microBatchSize": 4, "learningRate": 0.0005},
        }
    )
    spec = config.spec
    argv = launch_argv(spec, str(config_path), Topology.local(spec))
    termination_log = tmp_path / "termination-log"
    done = subprocess.run(
        argv,
        env=subprocess_env(**launch_env(spec), FT_TERMINATION_LOG=str(termination_log)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n--- stderr (tail)\n{done.stderr[-6000:]}\n--- stdout (tail)\n{done.stdout[-2000:]}"
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"event"')]
    assert [e["step"] for e in events] == [1, 2, 3]  # rank 0 alone reports
    summary = json.loads(termination_log.read_text())
    assert summary["ok"] and summary["step"] == 3
    layout = layout_of(config)
    record = json.loads(layout.run_json.read_text())
    assert record["hyperparameters"]["world_size"] == 2
    assert record["deepspeed"]["zero_optimization"]["stage"] == stage
    if adapter == "full":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(layout.model))  # ZeRO-3 gathered whole weights
        assert all(p.numel() > 0 for p in model.parameters())
    else:
        assert (layout.adapter / "adapter_model.safetensors").is_file()

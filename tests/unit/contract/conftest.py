"""The trainer tests' fixtures (the tiny chat model, a prepared run around it), for the contract tests that
run the real trainer."""

from tests.unit.trainer.conftest import tiny_model_dir  # noqa: F401 - fixture
from tests.unit.trainer.train.conftest import _quiet_cpu, config_path, make_run  # noqa: F401 - fixtures

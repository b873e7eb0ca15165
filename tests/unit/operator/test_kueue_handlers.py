"""Kueue mode's Kopf registrations: the Workload index must be reachable under the name the runtime
reads (`Indexes.from_kwargs`), whatever Kopf would derive from the nested function's `__qualname__`."""

import kopf
import pytest

from finetune_operator.handlers.job import register_kueue
from finetune_operator.runtime.indexes import Indexes

pytestmark = pytest.mark.unit


def test_the_workload_index_is_registered_under_the_name_the_controller_reads():
    registry = kopf.OperatorRegistry()
    register_kueue(registry)
    indexes = {h.id for h in registry._indexing.get_all_handlers()}  # noqa: SLF001 - no public listing
    assert indexes == {"ft_workloads"}

    live = Indexes.from_kwargs({name: {("ns", "job-train-a0"): ["state"]} for name in indexes})
    assert live.workload("ns", "job-train-a0") == "state"


def test_workloads_are_watched_at_the_preferred_version():
    registry = kopf.OperatorRegistry()
    register_kueue(registry)
    selectors = [h.selector for h in registry._watching.get_all_handlers()]  # noqa: SLF001
    selectors += [h.selector for h in registry._indexing.get_all_handlers()]  # noqa: SLF001
    assert selectors and all(s.group == "kueue.x-k8s.io" and s.version is None for s in selectors)

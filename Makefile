# People's entry points; CI runs `make test` through .ci/run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: install setup quickstart test test-unit test-fast lint controlplane cluster-demo crds bench

install:
	scripts/install.sh

quickstart: install
	$(VENV)/bin/ftctl run examples/quickstart.yaml

# Build the test control plane, kwok and helm into .cache/bin (idempotent, cached). With UP=1 also
# start it (etcd, apiserver, controller-manager, scheduler, kwok GPU nodes, local pod runner) and
# keep it running until Ctrl-C: `make controlplane UP=1`, then use the printed KUBECONFIG.
controlplane:
	scripts/build-controlplane.sh
	@if [ "$(UP)" = "1" ]; then $(PY) -m tests.harness.cluster up --runner; fi

# The virtualenv and the control plane side by side: pip waits on the network and the disk, go on the CPU.
# FT_SETUP_SIDE_BY_SIDE=1: the Go build's disk check counts the virtualenv being installed beside it.
setup:
	FT_SETUP_SIDE_BY_SIDE=1 $(MAKE) -j2 install controlplane

# The cluster path on a laptop (README "On a cluster"): the test control plane with kwok GPU nodes and the
# local pod runner, the chart installed (CRDs, RBAC, settings), the operator as a process with the chart's
# ServiceAccount and values, the claims seeded with the tiny model and the quickstart data; prints the
# commands to try. Ctrl-C stops everything (tests/harness/demo.py).
cluster-demo: setup
	$(PY) -m tests.harness.demo

# Every tier that can run here: unit (with the slow training tests), api, e2e. The cluster tier
# runs only when KUBECONFIG names a real cluster (FT_USE_EXISTING_CLUSTER=1). Set-up as in `setup`, with
# lint (which needs only the virtualenv) also beside the Go builds instead of after them.
test:
	FT_SETUP_SIDE_BY_SIDE=1 $(MAKE) -j2 controlplane lint
	$(PY) -m pytest -m "unit or api or e2e" -n 2 --durations=25

# The fast inner loop: lint, type check, pure unit tests.
test-fast: install lint
	$(PY) -m pytest -m "unit and not slow" -q

# ruff, then mypy (strict on finetune_api); both configured in pyproject.toml.
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

test-unit: install
	$(PY) -m pytest -m unit

crds:
	$(VENV)/bin/ftctl crds
	$(VENV)/bin/ftctl api-docs --readme README.md

bench: install controlplane
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

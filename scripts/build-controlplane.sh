#!/usr/bin/env bash
# Build the test control plane (tests/controlplane, Kubernetes v1.34.3 + etcd v3.6.4 in one
# binary), kwok, helm, Kueue's manager, the cluster DNS (tests/tools/ft-coredns, CoreDNS with its
# kubernetes plugin) and SeaweedFS's `weed` (the tests' S3 store) into $REPO/.cache/bin. Idempotent: each tool is rebuilt
# only when it is missing or its inputs/pinned version changed (a stamp file sits next to each binary).
# Safe to run concurrently on one cache (worktrees share it through FT_CACHE_DIR): a second run waits
# for the first (flock on $CACHE/.build.lock), then finds everything up to date. Each binary is built
# aside and renamed into place, then stamped, so a binary with a stamp is a finished one (the harness's
# "is it built" check, tests/harness/cluster.py missing_binaries) and running copies are never overwritten.
# Go caches live under $CACHE/go: the control plane's for good, the other builds' only while they run
# (below). Before building, it checks that $CACHE's filesystem has the space the stale builds need
# (scripts/setup-disk.sh holds the figures) and stops with a message saying how much otherwise.
#
# Usage: scripts/build-controlplane.sh [--force]
set -euo pipefail

KUBERNETES_VERSION=v1.34.3   # keep in sync with tests/controlplane/go.mod
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
KUEUE_VERSION=v0.17.0        # tests/api/test_kueue_mode.py applies its CRDs from the module cache
COREDNS_VERSION=v1.15.0      # kwok, helm, coredns: the versions tests/tools/go.mod requires
GATEWAY_API_VERSION=v1.5.0   # tests/api/test_canary.py applies its HTTPRoute CRD from the module cache
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6   # weed 4.53: the S3-compatible store of the storage tests

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FT_CACHE_DIR:-$REPO/.cache}"
BIN="$CACHE/bin"
mkdir -p "$BIN" "$CACHE/go"
# .cache/ ignores itself, whatever the repository's .gitignore says.
[ -f "$CACHE/.gitignore" ] || printf '*\n' > "$CACHE/.gitignore"

log() { echo "build-controlplane: $*"; }
# shellcheck source=setup-disk.sh
. "$REPO/scripts/setup-disk.sh"

LOCK="$CACHE/.build.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another build holds $LOCK; waiting for it to finish"
    flock 9
fi

# Go's caches. Only our own control plane (tests/controlplane: ~600 lines of ours on Kubernetes' packages,
# edited now and then) keeps its module and build caches: an edit recompiles only what changed. The other
# builds are third-party releases (tests/tools adds a 36-line CoreDNS plugin list) that change only with a
# version bump, which recompiles them anyway; each builds in scratch caches under $SCRATCH, deleted once its
# binary is stamped (their caches were most of the Go set-up's disk, and all of them at once its peak).
# A scratch build cache starts as hard links to ours, so the standard library the control plane compiled
# (the same action for every build: -trimpath, CGO_ENABLED=0) is reused, not compiled three more times
# (+16% of the cold build's compile work, bench/go_compile_work.py); links cost no space and go adds new
# entries as new files. Module zips are not needed once extracted (go checks a module by its .ziphash),
# so ours are deleted; the scratch module caches are writable (-modcacherw) so that `rm -rf` removes them.
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOCACHE="$CACHE/go/cache"
SCRATCH="$CACHE/go/scratch"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

command -v go >/dev/null || { echo "build-controlplane: go not found in PATH" >&2; exit 1; }
NICE="nice -n 10"

# stale "NAME..." STAMP_CONTENT: true when one of the binaries is missing or was built from other inputs.
stale() {
    local name
    for name in $1; do
        if [ "$FORCE" = 1 ] || [ ! -x "$BIN/$name" ] || [ "$(cat "$BIN/.$name.stamp" 2>/dev/null)" != "$2" ]; then
            return 0
        fi
    done
    return 1
}

# build "NAME..." STAMP_CONTENT COMMAND...   (COMMAND writes each binary NAME into the directory $OUT;
# one command may build several binaries, which then share one stamp content and are rebuilt together)
build() {
    local names="$1" stamp="$2" name; shift 2
    if ! stale "$names" "$stamp"; then
        for name in $names; do log "$name up to date ($BIN/$name)"; done
        return 0
    fi
    log "building $names ..."
    local t0=$SECONDS
    local out="$BIN/.building-${names// /-}"
    rm -rf "$out" && mkdir -p "$out"
    OUT="$out" "$@"
    for name in $names; do
        mv -f "$out/$name" "$BIN/$name"
        echo "$stamp" > "$BIN/.$name.stamp"
    done
    rm -rf "$out"
    log "built $names in $((SECONDS - t0))s -> $BIN"
}

# scratch COMMAND...: run COMMAND with module and build caches of its own under $SCRATCH (see above),
# removed afterwards, also when it fails (the EXIT trap).
drop_scratch() { [ ! -e "$SCRATCH" ] || { chmod -R u+w "$SCRATCH/mod" 2>/dev/null; rm -rf "$SCRATCH"; }; }
scratch() {
    drop_scratch
    mkdir -p "$SCRATCH/mod" "$SCRATCH/cache" "$GOCACHE"
    find "$GOCACHE" -mindepth 1 -maxdepth 1 -type d -name '[0-9a-f][0-9a-f]' -exec cp -al -t "$SCRATCH/cache" {} +
    [ ! -f "$GOCACHE/trim.txt" ] || cp "$GOCACHE/trim.txt" "$SCRATCH/cache/"
    GOMODCACHE="$SCRATCH/mod" GOCACHE="$SCRATCH/cache" GOFLAGS="$GOFLAGS -modcacherw" "$@"
    drop_scratch
}
trap drop_scratch EXIT

CP_DIR="$REPO/tests/controlplane"
cp_stamp="$(go version) $(cat "$CP_DIR/go.mod" "$CP_DIR/go.sum" "$CP_DIR"/*.go | sha256sum | cut -d' ' -f1)"
K8S_MINOR="${KUBERNETES_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
CP_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    CP_LDFLAGS+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    CP_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# kwok, helm and the cluster DNS from one module (tests/tools: kwok and helm as `tool`s at their
# releases, ft-coredns its own main), in one `go build`: the Kubernetes client libraries they share
# compile once, and go links the three binaries while it compiles the rest. ft-coredns is CoreDNS with
# only the plugins a cluster's DNS uses here (tests/harness/clusterdns.py). -X of a variable a binary
# lacks is ignored, so the three share one -ldflags.
TOOLS_DIR="$REPO/tests/tools"
for req in "sigs.k8s.io/kwok $KWOK_VERSION" "helm.sh/helm/v3 $HELM_VERSION" "github.com/coredns/coredns $COREDNS_VERSION"; do
    grep -Eq "^(require )?[[:space:]]*$req( |$)" "$TOOLS_DIR/go.mod" || { echo "build-controlplane: tests/tools/go.mod does not require $req" >&2; exit 1; }
done
# Release builds of helm set the Kubernetes version they default to (`helm template` without
# --kube-version); a plain `go install` would default to v1.20 and refuse kubeVersion: >=1.29.
TOOLS_LDFLAGS="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
TOOLS_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    TOOLS_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
TOOLS_LDFLAGS+=" -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
tools_stamp="$(go version) $(cat "$TOOLS_DIR/go.mod" "$TOOLS_DIR/go.sum" "$TOOLS_DIR"/*/*.go | sha256sum | cut -d' ' -f1) k8s-$K8S_MINOR"
kueue_stamp="$KUEUE_VERSION $(go version)"
weed_stamp="$SEAWEEDFS_VERSION $(go version)"

# Enough disk for what is stale: the control plane's caches stay, the others' go after each build, so the
# largest of them counts. `make setup`/`make test` install the virtualenv beside this build
# (FT_SETUP_SIDE_BY_SIDE=1): a virtualenv not installed yet counts too, since both fill the same disk.
need=0 what=""
if stale ft-controlplane "$cp_stamp"; then need=$SETUP_DISK_GB_CONTROLPLANE what="control plane $need GB"; fi
most=0 most_name=""
for part in "kwok helm ft-coredns|$tools_stamp|$SETUP_DISK_GB_TOOLS|kwok+helm+coredns" \
            "kueue|$kueue_stamp|$SETUP_DISK_GB_KUEUE|kueue" "weed|$weed_stamp|$SETUP_DISK_GB_WEED|weed"; do
    IFS='|' read -r names stamp gb label <<< "$part"
    if stale "$names" "$stamp" && [ "$gb" -gt "$most" ]; then most=$gb most_name=$label; fi
done
if [ "$most" -gt 0 ]; then need=$((need + most)) what="${what:+$what + }$most_name $most GB"; fi
venv="${VENV:-.venv}"; [[ "$venv" = /* ]] || venv="$REPO/$venv"
if [ "$need" -gt 0 ] && [ "${FT_SETUP_SIDE_BY_SIDE:-}" = 1 ] && [ ! -f "$venv/.install-stamp" ]; then
    need=$((need + SETUP_DISK_GB_VENV)) what="$what + the virtualenv installed beside it $SETUP_DISK_GB_VENV GB"
fi
[ "$need" = 0 ] || need_disk build-controlplane "$CACHE" "$need" "$what"

build ft-controlplane "$cp_stamp" \
    bash -c "cd '$CP_DIR' && $NICE go build -trimpath -ldflags='$CP_LDFLAGS' -o \"\$OUT/ft-controlplane\" ."

build "kwok helm ft-coredns" "$tools_stamp" \
    scratch bash -c "cd '$TOOLS_DIR' && $NICE go build -trimpath -ldflags='$TOOLS_LDFLAGS' -o \"\$OUT/\" tool ./ft-coredns"

# Kueue's manager (the `kueue` binary), run as a local process by tests/api/test_kueue_mode.py, from its
# own module: v0.17.0's dependencies (kubeflow trainer's generated API) do not compile against the
# k8s.io/api v0.37 the tools module resolves. Its CRDs are read from our module cache (below).
build kueue "$kueue_stamp" \
    scratch bash -c "GOBIN=\"\$OUT\" $NICE go install -trimpath \
        -ldflags='-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION' \
        sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"

# SeaweedFS's `weed` (S3-compatible object store for tests/harness/objectstore.py). Its go.mod has a
# replace directive, so `go install mod@version` is refused: build inside the module, in the scratch
# module cache (writable there, and deleted with it).
build weed "$weed_stamp" \
    scratch bash -c "set -e; $NICE go mod download github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION; \
        cd \"\$GOMODCACHE/github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION\"; \
        $NICE go build -trimpath -ldflags='-s -w' -o \"\$OUT/weed\" ./weed"

# CRDs the tests apply, from the releases' modules in our module cache (nothing is built; ~40 MB):
# Kueue's config/components/crd (tests/api/test_kueue_mode.py) and Gateway API's config/crd/standard
# (tests/api/test_canary.py). Downloaded only when missing (go extracts a module into place whole).
for mod in "sigs.k8s.io/kueue@$KUEUE_VERSION" "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"; do
    if [ ! -d "$GOMODCACHE/$mod" ]; then
        log "$mod CRDs ..."
        (cd "$CACHE" && $NICE go mod download "$mod")
    fi
done
[ ! -d "$GOMODCACHE/cache/download" ] || find "$GOMODCACHE/cache/download" -name '*.zip' -type f -delete

log "versions: $("$BIN/ft-controlplane" version); kwok $KWOK_VERSION; helm $("$BIN/helm" version --short 2>/dev/null || echo "$HELM_VERSION"); kueue $KUEUE_VERSION; coredns $COREDNS_VERSION"

# The disk the set-up needs, sourced by scripts/install.sh and scripts/build-controlplane.sh: the one
# place for the figures (GB, peak of a cold set-up on a fresh clone with empty caches, rounded up;
# measured as in docs/DESIGN.md §8) and the check that stops a set-up at its start with what it needs and
# what is free, instead of "no space left on device" in the middle of a download.

# install.sh, cold (no install stamp): .venv and .venv-mlflow (8 GB), plus the wheels one `pip install`
# holds in its temp directory until it installs them (torch's CUDA wheels and nvidia libraries: several
# GB). pip runs with --no-cache-dir, so nothing stays behind in its cache.
SETUP_DISK_GB_VENV=12
# build-controlplane.sh, per build: its module and build caches and its binary. The control plane keeps
# its caches (measured 0.55 + 2.81 + 0.12 GB); kwok+helm+CoreDNS, Kueue and weed each build in scratch
# caches deleted once their binaries are stamped (measured 0.54 + 0.87, 0.55 + 1.72 and 2.15 + 1.72 GB),
# so the Go builds need the control plane's figure plus the largest stale other one.
SETUP_DISK_GB_CONTROLPLANE=4
SETUP_DISK_GB_TOOLS=2
SETUP_DISK_GB_KUEUE=3
SETUP_DISK_GB_WEED=5

# need_disk WHO DIR GB [WHAT]: exit 1 unless the filesystem of DIR (or of its nearest existing parent)
# has GB free. WHAT says what the figure is made of.
need_disk() {
    local who=$1 dir=$2 gb=$3 what=${4:-} free_kb
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
    if [ "$free_kb" -lt $((gb * 1024 * 1024)) ]; then
        echo "$who: needs about $gb GB free under $dir${what:+ ($what)}, only $(awk -v k="$free_kb" \
            'BEGIN {printf "%.1f", k / 1048576}') GB free; free some space and run it again" >&2
        exit 1
    fi
}

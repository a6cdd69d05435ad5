#!/usr/bin/env bash
# loadtests/cluster.sh — the real path, on the e2e cluster (e2e/cluster): what a developer's
# transfer through ktx mesh gets against the port-forwards it rides on, and how long `ktx mesh`
# takes until the first marked request reaches the local process.
#
# Scenarios (rows, one JSON object per line, in OUT/results.jsonl):
#   tunnel-portforward-100mb  100 MiB GET, median of REPS, field mib_per_s; subjects
#       kubectl-port-forward  curl on the node through `kubectl port-forward pod/…` (SPDY)
#       spdy-port-forward     curl through `ktx forward` over SPDY (ktx's default transport, the
#                             one its tunnel rides), same pod
#       ws-port-forward       the same over the API server's WebSocket (KTX_PORT_FORWARD=websocket,
#                             ktx's fallback)
#       ktx-mesh              `ktx-testbackend client download` in a pod with the mark, through
#                             Service → router → shadow → tunnel → ktx → the local
#                             ktx-testbackend (bytes flow laptop → pod, the other way from the
#                             two above); the body is counted and dropped, as curl -o /dev/null
#                             does on the node
#       pod-to-pod            the same client straight to the workload's pod (for scale)
#     ktx-mesh and kubectl-port-forward-upload take turns (one transfer each, the mesh up for
#     both), so the two figures the goal compares share the machine's load and drift
#   mesh-first-request        subject ktx-mesh, field seconds: `ktx mesh` started → first marked
#                             request (asked every 50 ms from a pod already running) answered by
#                             the local process; median of REPS; ktx's progress lines with their
#                             times are in the log, to see where the seconds go
#
# Usage: loadtests/cluster.sh [--reps N] [--no-build] [--images] [--scenarios LIST] [--out-dir DIR]
#   --reps N       repetitions per figure (default 3)
#   --no-build     use the binaries already in $CARGO_TARGET_DIR
#   --images       rebuild and load the router/shadow/testbackend images first (e2e/images.sh --load)
#   --scenarios    comma list of tunnel-portforward-100mb,mesh-first-request (default: both)
#   --out-dir      where results.jsonl and the log go (default loadtests/out/cluster/)
# A run of both scenarios without --out-dir merges its rows into loadtests/results.json and its
# section (with the targets) into loadtests/RESULTS.md; any other run merges into OUT/results.json
# and OUT/RESULTS.md, so a partial run never overwrites the published figures.
# Holds /work/cluster.lock (or $KTX_CLUSTER_LOCK) for the whole cluster part; starts the cluster
# if it is stopped (needs root then). ktx and the local test backend are release builds; each
# scenario runs in its own namespace, deleted at its end (also on failure), bounded by a timeout.
# KTX_BIN / KTX_TESTBACKEND_BIN pick other binaries (e.g. ktx built at another commit, to compare).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ALL_SCENARIOS="tunnel-portforward-100mb,mesh-first-request"
REPS=3 BUILD=1 IMAGES=0 SCENARIOS=$ALL_SCENARIOS OUT=$HERE/out/cluster PUBLISH=1
LOCK=${KTX_CLUSTER_LOCK:-/work/cluster.lock}

usage() { sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --reps) REPS=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --images) IMAGES=1 ;;
    --scenarios) SCENARIOS=${2:?}; shift ;;
    --out-dir) OUT=${2:?}; PUBLISH=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
[[ $REPS =~ ^[1-9][0-9]?$ ]] || die "--reps takes 1-99"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}"
export KUBECONFIG=${KUBECONFIG:-/var/lib/ktx-e2e/admin.kubeconfig}
export KTX_E2E_KUBECTL=${KTX_E2E_KUBECTL:-/var/lib/ktx-e2e/bin/kubectl}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) # the tests run in e2e/: an absolute path
LOG=$OUT/run.log
ROWS=$OUT/rows.jsonl
: >"$ROWS"
: >"$LOG"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$LOG" >&2; }

tests=()
for s in ${SCENARIOS//,/ }; do
  case $s in
    tunnel-portforward-100mb) tests+=(tunnel_portforward_100mb) ;;
    mesh-first-request) tests+=(mesh_first_request) ;;
    *) die "unknown scenario: $s" ;;
  esac
done

cd "$ROOT"
if ((BUILD)); then
  log "building ktx and ktx-testbackend (release), and the e2e harness"
  cargo build --release -p ktx -p ktx-testbackend 2>>"$LOG"
  # The harness builds the debug ones too (cheap when up to date).
  cargo build -p ktx -p ktx-testbackend 2>>"$LOG"
  cargo test -p ktx-e2e --test cluster_bench --no-run 2>>"$LOG"
fi
export KTX_BIN=${KTX_BIN:-$CARGO_TARGET_DIR/release/ktx}
export KTX_TESTBACKEND_BIN=${KTX_TESTBACKEND_BIN:-$CARGO_TARGET_DIR/release/ktx-testbackend}
[[ -x $KTX_BIN && -x $KTX_TESTBACKEND_BIN ]] || die "no release build in $CARGO_TARGET_DIR (drop --no-build)"

export KTX_E2E=1 KTX_E2E_REQUIRED=1 KTX_BENCH_ROWS=$ROWS KTX_BENCH_REPS=$REPS
filter=$(IFS='|'; echo "${tests[*]}")
log "waiting for $LOCK"
set +e
# shellcheck disable=SC2016 # expanded by the inner shell
flock "$LOCK" env IMAGES="$IMAGES" TESTS="${tests[*]}" bash -c '
  set -euo pipefail
  e2e/cluster status >/dev/null 2>&1 || e2e/cluster up
  if ((IMAGES)); then e2e/images.sh --load; fi
  for t in $TESTS; do
    timeout 1500 cargo test -p ktx-e2e --test cluster_bench -- --ignored --exact "$t" \
      --test-threads=1 --nocapture
  done
' 2>&1 | tee -a "$LOG" | grep -E "^(ROW|rep |  +[0-9.]+s )|panicked|test result" >&2
rc=${PIPESTATUS[0]}
set -e
((rc == 0)) || log "the cluster part failed (exit $rc); see $LOG"
[[ -s $ROWS ]] || die "no rows were written (see $LOG; wanted $filter)"

python3 - "$ROWS" "$OUT/results.jsonl" "loadtests/cluster.sh $*" <<'EOF'
import json, subprocess, sys, datetime
rows_path, out_path, command = sys.argv[1:4]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
with open(rows_path) as f, open(out_path, "w") as out:
    for line in f:
        if line.strip():
            r = json.loads(line)
            r.update(commit=commit, date=date, command=command)
            out.write(json.dumps(r) + "\n")
            v = r.get("mib_per_s", r.get("seconds"))
            unit = "MiB/s" if "mib_per_s" in r else "s"
            allv = r.get("mib_per_s_all", r.get("seconds_all"))
            print(f"{r['scenario']:26} {r['subject']:22} {v:>8} {unit}  runs {allv}")
EOF
RESULTS_DIR=$OUT
[[ $PUBLISH == 1 && $SCENARIOS == "$ALL_SCENARIOS" ]] && RESULTS_DIR=$HERE
k8s=$("$KTX_E2E_KUBECTL" version -o json 2>/dev/null |
  python3 -c 'import json,sys; print("Kubernetes " + json.load(sys.stdin)["serverVersion"]["gitVersion"])' ||
  echo "version unknown")
python3 "$HERE/lib/cluster_report.py" merge --rows "$OUT/results.jsonl" --json "$RESULTS_DIR/results.json" \
  --md "$RESULTS_DIR/RESULTS.md" --kubernetes "$k8s"
log "rows in $OUT/results.jsonl, merged into $RESULTS_DIR/results.json and RESULTS.md (log: $LOG)"

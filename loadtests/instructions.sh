#!/usr/bin/env bash
# loadtests/instructions.sh — user-space instructions per request of ktx-router (callgrind),
# for A/B comparisons of router changes on a machine whose CPU time is too noisy to tell a
# few percent apart (a shared VM: run.sh's CPU µs/request moved 20% between two quick runs
# of one binary on the 2026-12-07 AMD machine; instruction counts moved under 1%).
#
# It is not a benchmark: instructions are not time (no cache misses, no kernel, valgrind's
# serialized threads), so it never replaces run.sh's published figures. It answers "does this
# change make the router do less work per request", deterministically.
#
# Usage: loadtests/instructions.sh [--router BIN] [--requests N] [h1|h2c]...
#   --router    the ktx-router binary (default: $CARGO_TARGET_DIR/release/ktx-router, or
#               target/release/ktx-router)
#   --requests  measured requests per protocol (default 20000), after 2,000 not measured
#   h1 | h2c    HTTP/1.1 keep-alive (h2load --h1 -c 32) and/or h2c (-c 10 -m 10); default both
# Every request is marked (VERSION: foobar), so it takes a rule to the "shadow" backend, as in
# run.sh. Needs valgrind, h2load (nghttp2-client), curl, python3. Listens on 127.0.0.1 ports
# 29190-29193 only; every load run is bounded.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUTER=$TARGET/release/ktx-router
BACKEND=$TARGET/release/ktx-testbackend
N=20000
MODES=()
die() { echo "instructions.sh: $*" >&2; exit 1; }
while (($#)); do
  case $1 in
    --router) ROUTER=${2:?}; shift ;;
    --requests) N=${2:?}; shift ;;
    h1 | h2c) MODES+=("$1") ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
((${#MODES[@]})) || MODES=(h1 h2c)
[[ $N =~ ^[1-9][0-9]*$ ]] || die "--requests takes a positive number, not '$N'"
for tool in valgrind callgrind_annotate callgrind_control h2load curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install valgrind nghttp2-client curl python3)"
done
[[ -x $ROUTER ]] || die "no router binary at $ROUTER (cargo build --release -p ktx-router, or --router)"
[[ -x $BACKEND ]] || die "no test backend at $BACKEND (cargo build --release -p ktx-testbackend)"

WORK=$(mktemp -d /tmp/ktx-instructions.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

STUNTMAN=127.0.0.1:29190 SHADOW=127.0.0.1:29191 LISTEN=127.0.0.1:29192 ADMIN=127.0.0.1:29193
"$BACKEND" --listen "$STUNTMAN" --name stuntman --threads 1 --log-level warn >"$WORK/stuntman.log" 2>&1 &
PIDS+=($!)
"$BACKEND" --listen "$SHADOW" --name shadow --threads 1 --log-level warn >"$WORK/shadow.log" 2>&1 &
PIDS+=($!)
KTX_BENCH_STUNTMAN=$STUNTMAN KTX_BENCH_SHADOW=$SHADOW \
  python3 "$HERE/lib/ktxbench.py" routes --rules 1 --out "$WORK/routes.yaml"

# ready URL — waits up to 60 s (valgrind starts slowly) for a 2xx from URL.
ready() {
  local i
  for i in $(seq 300); do
    curl -sf -m 1 -o /dev/null "$1" && return 0
    sleep 0.2
  done
  return 1
}
ready "http://$SHADOW/hello" || die "the test backends did not start (see $WORK)"

for mode in "${MODES[@]}"; do
  # The router re-executes itself once to set its allocator's options; given them already, it
  # does not, so valgrind follows the process that serves.
  MIMALLOC_PURGE_DELAY=10 MIMALLOC_ALLOW_THP=0 valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/cg.%p" "$ROUTER" --listen "$LISTEN" --admin "$ADMIN" \
    --routes-file "$WORK/routes.yaml" --threads 1 --http-ports "${LISTEN##*:}" \
    --log-format text --log-level warn >"$WORK/router.$mode.log" 2>&1 &
  rp=$!
  PIDS+=("$rp")
  ready "http://$ADMIN/readyz" || die "the router did not start under valgrind (see $WORK/router.$mode.log)"
  if [[ $mode == h1 ]]; then load=(--h1 -c 32); else load=(-c 10 -m 10); fi
  h2load -t 1 "${load[@]}" -n 2000 -H 'VERSION: foobar' "http://$LISTEN/hello" >/dev/null 2>&1
  callgrind_control -z "$rp" >/dev/null 2>&1
  out=$(h2load -t 1 "${load[@]}" -n "$N" -H 'VERSION: foobar' "http://$LISTEN/hello" 2>&1)
  ok=$(awk '/status codes:/ {print $3}' <<<"$out")
  callgrind_control -d "$rp" >/dev/null 2>&1
  kill "$rp"
  wait "$rp" 2>/dev/null || true
  [[ $ok == "$N" ]] || die "$mode: $ok of $N requests answered 2xx"
  total=$(callgrind_annotate "$WORK/cg.$rp.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  [[ -n $total ]] || die "$mode: no callgrind totals in $WORK/cg.$rp.1"
  printf '%s\t%d instructions per request (%s requests, %s)\n' "$mode" $((total / N)) "$N" "$ROUTER"
done

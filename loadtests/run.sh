#!/usr/bin/env bash
# loadtests/run.sh — ktx-router side by side with nginx (configured like kt-connect's router),
# HAProxy and a direct connection, in one run, on one machine.
#
# The process under test runs alone on core 1 (taskset -c 1); the load generator (h2load, curl,
# the idle-connection client) and both backends (ktx-testbackend "stuntman" and "shadow") share
# core 0; all at nice -15. The main metric is CPU µs per request of the process under
# test: delta of utime+stime from /proc/PID/stat over all its processes, divided by requests
# answered. Also: rps, latency added at a paced 1k rps, RSS per idle keep-alive connection,
# errors while rules change.
#
# Usage: loadtests/run.sh [--quick] [--subjects LIST] [--scenarios LIST] [--no-build]
#                         [--no-install] [--out-dir DIR]
#   --quick        short runs (whole run under two minutes once tools and binaries exist,
#                  plus about 100 s for the three noisy-* scenarios)
#   --subjects     comma list of: direct,ktx-router,nginx,haproxy (default: all)
#   --scenarios    comma list of: http1-keepalive,http1-10k-rules,h2c,grpc-unary,
#                  stream-100mb,idle-5k,rule-churn,noisy-h2-window0,noisy-silent-5k,
#                  noisy-slow-uploads (default: all)
#   --no-build     use the release binaries already in $CARGO_TARGET_DIR
#   --no-install   do not apt-get install missing tools
# Writes loadtests/results.json and loadtests/RESULTS.md (only for a run of all subjects and
# scenarios, unless --out-dir is given); logs and configs go to loadtests/out/.
# Everything listens on 127.0.0.1 only; every load run is bounded (-n / -D / curl -m).
set -euo pipefail

ORIG_ARGS="$*"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# The system python starts in ~40 ms; a pyenv shim on PATH can take 10× that, many times a run.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
BENCH_PY=$HERE/lib/ktxbench.py
bench() { "$PY" "$BENCH_PY" "$@"; }

ALL_SUBJECTS="direct,ktx-router,nginx,haproxy"
ALL_SCENARIOS="http1-keepalive,http1-10k-rules,h2c,grpc-unary,stream-100mb,idle-5k,rule-churn,noisy-h2-window0,noisy-silent-5k,noisy-slow-uploads"
QUICK=0 BUILD=1 INSTALL=1 SUBJECTS=$ALL_SUBJECTS SCENARIOS=$ALL_SCENARIOS RESULTS_DIR=""

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --subjects) SUBJECTS=${2:?}; shift ;;
    --scenarios) SCENARIOS=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --out-dir) RESULTS_DIR=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
if [[ -z $RESULTS_DIR ]]; then
  if [[ $SUBJECTS == "$ALL_SUBJECTS" && $SCENARIOS == "$ALL_SCENARIOS" ]]; then
    RESULTS_DIR=$HERE
  else
    RESULTS_DIR=$HERE/out # a partial run must not overwrite the published results
  fi
fi

# ------------------------------------------------------------------ sizes
if ((QUICK)); then
  TPUT_D=1200ms   # max-throughput run (h2load -D)
  WARM_N=2000     # warm-up requests before each measurement
  LAT_N=1000      # requests in the paced 1k rps latency run (1 s)
  REPS=1          # throughput runs per measurement (the median is kept)
  QUIET_WAIT=0    # seconds to wait, at most, for other processes to leave the CPUs alone
  STREAM_REPS=2   # 100 MB uploads per subject
  IDLE_CONNS=5000
  IDLE_CHECK_EVERY=5 # after the idle period, reuse every 5th connection to check it is still open
  CHURN_D=2s
  NOISY_SILENT=5000
  MODE="quick"
else
  TPUT_D=10s
  WARM_N=20000
  LAT_N=10000
  REPS=3
  QUIET_WAIT=5
  STREAM_REPS=5
  IDLE_CONNS=5000
  IDLE_CHECK_EVERY=1
  CHURN_D=10s
  NOISY_SILENT=5000
  MODE="full"
fi
# Everything this script runs gets a high priority (nice -15) on its core, so that a build
# running next to the benchmark on a shared machine gets little of the pinned cores while
# something is being measured (and the process under test is not descheduled mid-request).
PIN0=(nice -n -15 taskset -c 0) # load generators and backends
PIN1=(nice -n -15 taskset -c 1) # the process under test
H1_CLIENTS=32   # HTTP/1.1 keep-alive connections in throughput runs
H2_CLIENTS=10   # HTTP/2 connections …
H2_STREAMS=10   # … with this many concurrent streams each
LAT_CLIENTS=10  # paced latency run: LAT_CLIENTS × 100 req/s = 1k rps

# Ten ports from KTX_BENCH_PORT_BASE (default 29180, below the ephemeral range); all must be free.
PORT_BASE=${KTX_BENCH_PORT_BASE:-29180}
export KTX_BENCH_STUNTMAN=127.0.0.1:$PORT_BASE # the original workload (default target)
export KTX_BENCH_SHADOW=127.0.0.1:$((PORT_BASE + 1)) # the developer's process (rule target)
STUNTMAN=$KTX_BENCH_STUNTMAN SHADOW=$KTX_BENCH_SHADOW
NGINX_H1=127.0.0.1:$((PORT_BASE + 2)) NGINX_H2=127.0.0.1:$((PORT_BASE + 3))
HAPROXY_H1=127.0.0.1:$((PORT_BASE + 4)) HAPROXY_H2=127.0.0.1:$((PORT_BASE + 5))
KTX_PORT=127.0.0.1:$((PORT_BASE + 6)) KTX_ADMIN=127.0.0.1:$((PORT_BASE + 7))

OUT=$HERE/out
RUN=$OUT/run
rm -rf "$RUN"
mkdir -p "$RUN"
LOG=$RUN/run.log
ROWS=$RUN/rows.jsonl
: >"$ROWS"
NOTES=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ processes we own
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in {1..30}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOGFILE CMD... — runs CMD in the background, remembers its PID in BG_PID.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# stop_pid PID — TERM, up to 5 s, then KILL; only for PIDs this script started.
stop_pid() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# wait_http URL [SECONDS [CURL-FLAGS...]] — until URL answers at all (with -f: answers 2xx).
wait_http() {
  local url=$1 tries=$((${2:-10} * 20))
  shift $(($# > 1 ? 2 : 1))
  for ((i = 0; i < tries; i++)); do
    curl -s -o /dev/null -m 1 "$@" "$url" && return 0
    sleep 0.05
  done
  return 1
}

# ------------------------------------------------------------------ tools
install_tools() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v curl >/dev/null || need+=(curl)
  command -v ss >/dev/null || need+=(iproute2)
  command -v python3 >/dev/null || need+=(python3)
  ((${#need[@]})) || return 0
  ((INSTALL)) || die "missing tools (${need[*]}) and --no-install given"
  log "installing ${need[*]}"
  # nginx and haproxy must not start as system services: deny service starts while installing.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  apt-get update -qq >>"$LOG" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >>"$LOG" 2>&1 ||
    { ((made_policy)) && rm -f "$policy"; die "apt-get install ${need[*]} failed (see $LOG)"; }
  ((made_policy)) && rm -f "$policy"
  return 0
}

# ------------------------------------------------------------------ build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}
BACKEND_BIN=$CARGO_TARGET_DIR/release/ktx-testbackend
ROUTER_BIN=$CARGO_TARGET_DIR/release/ktx-router
ROUTER_MISSING=""
ROUTER_ARGS=()

build() {
  if ((BUILD)); then
    log "cargo build --release -p ktx-testbackend -p ktx-router"
    if ! (cd "$ROOT" && cargo build --release -p ktx-testbackend -p ktx-router) >>"$LOG" 2>&1; then
      ROUTER_MISSING="cargo build --release -p ktx-router failed"
      log "$ROUTER_MISSING; building the backend alone"
      (cd "$ROOT" && cargo build --release -p ktx-testbackend) >>"$LOG" 2>&1 ||
        die "cargo build -p ktx-testbackend failed (see $LOG)"
    fi
  fi
  [[ -x $BACKEND_BIN ]] || die "no $BACKEND_BIN"
  if [[ -z $ROUTER_MISSING ]]; then
    if [[ ! -x $ROUTER_BIN ]]; then
      ROUTER_MISSING="no ktx-router binary at $ROUTER_BIN"
    elif ! "$ROUTER_BIN" --help >"$RUN/ktx-router.help" 2>&1 ||
      ! grep -q -- '--routes-file' "$RUN/ktx-router.help" ||
      ! grep -q -- '--admin' "$RUN/ktx-router.help"; then
      ROUTER_MISSING="ktx-router --help does not show --routes-file/--admin"
    elif grep -q -- '--threads' "$RUN/ktx-router.help"; then
      ROUTER_ARGS=(--threads 1)
    fi
    # The benchmark's port is an HTTP port, as ktx declares the target of a Service port named
    # http (or appProtocol http): silent clients there wait for their request, no passthrough.
    if grep -q -- '--http-ports' "$RUN/ktx-router.help"; then
      ROUTER_ARGS+=(--http-ports "${KTX_PORT##*:}")
    fi
  fi
  [[ -z $ROUTER_MISSING ]] || log "ktx-router subject unavailable: $ROUTER_MISSING"
}

# ------------------------------------------------------------------ backends
start_backends() {
  start_bg "$RUN/stuntman.log" "${PIN0[@]}" "$BACKEND_BIN" --listen "$STUNTMAN" --name stuntman --threads 1 --log-level warn
  start_bg "$RUN/shadow.log" "${PIN0[@]}" "$BACKEND_BIN" --listen "$SHADOW" --name shadow --threads 1 --log-level warn
  SHADOW_PID=$BG_PID
  if ! wait_http "http://$STUNTMAN/hello" || ! wait_http "http://$SHADOW/hello"; then
    die "backends did not start (see $RUN/*.log)"
  fi
}

# stuntman_requests — requests the stuntman has served (this query included), or "" if unknown.
stuntman_requests() {
  curl -s -m 5 "http://$STUNTMAN/_ktx/stats" |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["requests"])' 2>/dev/null || true
}

# ------------------------------------------------------------------ subjects
# start_subject SUBJECT SCENARIO — sets SUBJ_PID, SUBJ_H1, SUBJ_H2 (host:port) or returns 1.
start_subject() {
  local subject=$1 scenario=$2 rules=1 dir=$RUN/$1.$2
  [[ $scenario == http1-10k-rules ]] && rules=10000
  mkdir -p "$dir"
  case $subject in
    direct)
      SUBJ_PID=$SHADOW_PID SUBJ_H1=$SHADOW SUBJ_H2=$SHADOW
      ;;
    ktx-router)
      [[ -z $ROUTER_MISSING ]] || return 1
      bench routes --rules "$rules" --out "$dir/routes.yaml"
      start_bg "$dir/ktx-router.log" "${PIN1[@]}" "$ROUTER_BIN" --listen "$KTX_PORT" --admin "$KTX_ADMIN" \
        --routes-file "$dir/routes.yaml" "${ROUTER_ARGS[@]}" --log-format text --log-level warn
      SUBJ_PID=$BG_PID SUBJ_H1=$KTX_PORT SUBJ_H2=$KTX_PORT
      if ! wait_http "http://$KTX_ADMIN/readyz" 15 -f; then
        log "ktx-router did not become ready: $(tail -3 "$dir/ktx-router.log" | tr '\n' ' ')"
        stop_pid "$SUBJ_PID"
        return 1
      fi
      ;;
    nginx)
      bench nginx-conf --prefix "$dir" --h1 "$NGINX_H1" --h2 "$NGINX_H2" --rules "$rules" --out "$dir/nginx.conf"
      start_bg "$dir/nginx.stdout" "${PIN1[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      SUBJ_PID=$BG_PID SUBJ_H1=$NGINX_H1 SUBJ_H2=$NGINX_H2
      ;;
    haproxy)
      local map=()
      [[ $scenario == rule-churn ]] && map=(--map "$dir/rules.map")
      bench haproxy-conf --sock "$dir/admin.sock" --h1 "$HAPROXY_H1" --h2 "$HAPROXY_H2" --rules "$rules" \
        "${map[@]}" --out "$dir/haproxy.cfg"
      start_bg "$dir/haproxy.log" "${PIN1[@]}" haproxy -db -f "$dir/haproxy.cfg"
      SUBJ_PID=$BG_PID SUBJ_H1=$HAPROXY_H1 SUBJ_H2=$HAPROXY_H2
      ;;
  esac
  wait_http "http://$SUBJ_H1/hello" 15 || { log "$subject did not start"; stop_subject "$subject"; return 1; }
}

stop_subject() {
  [[ $1 == direct ]] || stop_pid "$SUBJ_PID"
}

# backend_of ARGS... — which backend answered (x-ktx-backend), via curl ARGS.
backend_of() {
  curl -s -m 5 -o /dev/null -D - "$@" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-ktx-backend"{print $2; exit}'
}

# check_routing SUBJECT SCENARIO MARK — the marked request reaches the shadow, an unmarked one
# the stuntman (not for direct, which has no rules). Prints why not, returns 1 on failure.
check_routing() {
  local subject=$1 scenario=$2 mark=$3 got want_unmarked=stuntman
  [[ $subject == direct ]] && want_unmarked=shadow
  case $scenario in
    h2c)
      got=$(backend_of --http2-prior-knowledge -H "VERSION: $mark" "http://$SUBJ_H2/hello")
      [[ $got == shadow ]] || { echo "h2c marked request reached '${got:-nothing}'"; return 1; }
      got=$(backend_of --http2-prior-knowledge "http://$SUBJ_H2/hello")
      ;;
    grpc-unary)
      local headers
      headers=$(curl -s -m 5 -o /dev/null -D - --http2-prior-knowledge -X POST --data-binary "@$RUN/unary.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "VERSION: $mark" \
        "http://$SUBJ_H2/ktx.test.Echo/Unary" | tr -d '\r')
      grep -qi '^x-ktx-backend: shadow$' <<<"$headers" || { echo "gRPC call did not reach the shadow"; return 1; }
      grep -qi '^grpc-status: 0$' <<<"$headers" || { echo "gRPC call without grpc-status 0 trailer"; return 1; }
      got=$want_unmarked
      ;;
    *)
      got=$(backend_of -H "VERSION: $mark" "http://$SUBJ_H1/hello")
      [[ $got == shadow ]] || { echo "marked request reached '${got:-nothing}'"; return 1; }
      got=$(backend_of "http://$SUBJ_H1/hello")
      ;;
  esac
  [[ $got == "$want_unmarked" ]] || { echo "unmarked request reached '${got:-nothing}'"; return 1; }
}

# ------------------------------------------------------------------ measurements
# load_args SCENARIO MARK — h2load arguments (everything but -n/-D/-c) for the scenario.
load_args() {
  local scenario=$1 mark=$2
  case $scenario in
    h2c) LOAD=(-m "$H2_STREAMS" -H "VERSION: $mark" "http://$SUBJ_H2/hello") ; LOAD_H1=0 ;;
    grpc-unary)
      LOAD=(-m "$H2_STREAMS" -d "$RUN/unary.bin" -H 'content-type: application/grpc' -H 'te: trailers'
        -H "VERSION: $mark" "http://$SUBJ_H2/ktx.test.Echo/Unary") ; LOAD_H1=0 ;;
    *) LOAD=(--h1 -H "VERSION: $mark" "http://$SUBJ_H1/hello") ; LOAD_H1=1 ;;
  esac
}

# quiet — wait (at most QUIET_WAIT s) until other processes leave both CPUs mostly idle, so a
# build running next to the benchmark does not land inside a measurement.
quiet() {
  ((QUIET_WAIT > 0)) || return 0
  bench quiet --max-wait "$QUIET_WAIT" >>"$LOG" 2>&1 || true
}

# measure_load SUBJECT SCENARIO MARK — warm-up, REPS max-throughput runs with CPU (the median
# run by CPU per request is kept), paced latency run.
measure_load() {
  local subject=$1 scenario=$2 mark=$3 tag=$RUN/$2.$1 clients s0 s1 rep runs=()
  load_args "$scenario" "$mark"
  if ((LOAD_H1)); then clients=$H1_CLIENTS; else clients=$H2_CLIENTS; fi
  "${PIN0[@]}" h2load -t 1 -c "$clients" -n "$WARM_N" "${LOAD[@]}" >"$tag.warm.txt" 2>&1 || true
  for ((rep = 1; rep <= REPS; rep++)); do
    quiet
    s0=$(bench snap "$SUBJ_PID")
    "${PIN0[@]}" h2load -t 1 -c "$clients" -D "$TPUT_D" "${LOAD[@]}" >"$tag.load$rep.txt" 2>&1 || true
    s1=$(bench snap "$SUBJ_PID")
    runs+=(--run "$s0" "$s1" "$tag.load$rep.txt")
  done
  local lat=("${LOAD[@]}")
  ((LOAD_H1)) || lat=(-m 1 "${LOAD[@]:2}")
  "${PIN0[@]}" h2load -t 1 -c "$LAT_CLIENTS" --rps $((1000 / LAT_CLIENTS)) -n "$LAT_N" \
    --log-file="$tag.lat.log" "${lat[@]}" >"$tag.lat.txt" 2>&1 || true
  bench load-row --scenario "$scenario" --subject "$subject" "${runs[@]}" --latency-log "$tag.lat.log" >>"$ROWS"
}

measure_stream() {
  local subject=$1 tag=$RUN/stream-100mb.$1 s0 s1 errors=0 t0 t1 answer
  curl -s -m 30 -o /dev/null -X POST --data-binary "@$RUN/1mb.bin" -H 'VERSION: foobar' "http://$SUBJ_H1/sink" || true
  quiet
  s0=$(bench snap "$SUBJ_PID")
  t0=$(date +%s%N)
  for ((i = 0; i < STREAM_REPS; i++)); do
    answer=$("${PIN0[@]}" curl -s -m 60 -X POST -T "$RUN/100mb.bin" -H 'VERSION: foobar' \
      -H 'content-type: application/octet-stream' "http://$SUBJ_H1/sink" 2>>"$tag.curl.err" || true)
    [[ $answer == 104857600 ]] || { errors=$((errors + 1)); log "stream-100mb/$subject: got '${answer:0:80}'"; }
  done
  t1=$(date +%s%N)
  s1=$(bench snap "$SUBJ_PID")
  local us=$(((t1 - t0) / 1000)) cpu
  cpu=$(($(cut -d' ' -f1 <<<"$s1") - $(cut -d' ' -f1 <<<"$s0")))
  bench row --scenario stream-100mb --subject "$subject" --snap0 "$s0" --snap1 "$s1" --requests "$STREAM_REPS" \
    --rps "$(awk "BEGIN{printf \"%.3f\", $STREAM_REPS * 1e6 / $us}")" --errors "$errors" \
    --extra "mib_per_s=$(awk "BEGIN{printf \"%.1f\", $STREAM_REPS * 100 * 1e6 / $us}")" \
    --extra "cpu_us_per_mib=$(awk "BEGIN{printf \"%.1f\", $cpu / ($STREAM_REPS * 100)}")" >>"$ROWS"
}

measure_idle() {
  local subject=$1 tag=$RUN/idle-5k.$1 rss0 rss1 pid
  "${PIN0[@]}" h2load -t 1 -c 10 -n "$WARM_N" --h1 -H 'VERSION: foobar' "http://$SUBJ_H1/hello" >"$tag.warm.txt" 2>&1 || true
  quiet
  rss0=$(bench rss "$SUBJ_PID")
  start_bg "$tag.client.log" "${PIN0[@]}" "$PY" "$BENCH_PY" idle --addr "$SUBJ_H1" --conns "$IDLE_CONNS" \
    --header 'VERSION: foobar' --status "$tag.status" --max-wait 60 --check-every "$IDLE_CHECK_EVERY"
  pid=$BG_PID
  for _ in {1..600}; do [[ -s $tag.status ]] && break; sleep 0.1; done
  [[ -s $tag.status ]] || { log "idle-5k/$subject: client did not finish opening connections"; stop_pid "$pid"; return 1; }
  sleep 1.5 # let the subject settle (ktx-router parks idle connections after 1 s)
  rss1=$(bench rss "$SUBJ_PID")
  kill -USR1 "$pid"
  for _ in {1..600}; do [[ -s $tag.status.done ]] && break; sleep 0.1; done
  stop_pid "$pid"
  local open errors dead checked
  read -r open errors dead checked < <("$PY" -c "import json; d=json.load(open('$tag.status.done')); \
print(d['open'], d['errors'], d['dead_after_idle'], d['checked_after_idle'])" 2>/dev/null || echo "0 $IDLE_CONNS 0 0")
  local per_conn=null
  ((open > 0)) && per_conn=$("$PY" -c "print(round(($rss1 - $rss0) / $open, 2))")
  bench row --scenario idle-5k --subject "$subject" --errors $((errors + dead)) \
    --extra "rss_kb=$per_conn" --extra "idle_conns=$open" --extra "rss_before_kb=$rss0" \
    --extra "rss_after_kb=$rss1" --extra "dead_after_idle=$dead" --extra "checked_after_idle=$checked" >>"$ROWS"
}

measure_churn() {
  local subject=$1 dir=$RUN/$1.rule-churn tag=$RUN/rule-churn.$1 s0 s1 m0 m1 churn=()
  case $subject in
    ktx-router) churn=(--file "$dir/routes.yaml") ;;
    nginx) churn=(--file "$dir/nginx.conf" --prefix "$dir" --h1 "$NGINX_H1" --h2 "$NGINX_H2" --pid "$SUBJ_PID") ;;
    haproxy) churn=(--file "$dir/rules.map" --sock "$dir/admin.sock") ;;
  esac
  "${PIN0[@]}" h2load -t 1 -c "$H1_CLIENTS" -n "$WARM_N" --h1 -H 'VERSION: foobar' "http://$SUBJ_H1/hello" >"$tag.warm.txt" 2>&1 || true
  quiet
  m0=$(stuntman_requests)
  s0=$(bench snap "$SUBJ_PID")
  start_bg "$tag.churn.log" "${PIN0[@]}" "$PY" "$BENCH_PY" churn --kind "$subject" "${churn[@]}" --status "$tag.churn.json" \
    --interval 0.1 --max-seconds 120
  local churner=$BG_PID
  "${PIN0[@]}" h2load -t 1 -c "$H1_CLIENTS" -D "$CHURN_D" --h1 -H 'VERSION: foobar' "http://$SUBJ_H1/hello" >"$tag.load.txt" 2>&1 || true
  stop_pid "$churner"
  s1=$(bench snap "$SUBJ_PID")
  m1=$(stuntman_requests)
  bench h2load "$tag.load.txt" >"$tag.load.json" || { log "no h2load result for rule-churn/$subject"; return 1; }
  local misrouted=null changes=null
  [[ -n $m0 && -n $m1 ]] && misrouted=$((m1 - m0 - 1))
  changes=$("$PY" -c "import json; print(json.load(open('$tag.churn.json'))['changes'])" 2>/dev/null || echo null)
  bench row --scenario rule-churn --subject "$subject" --load "$tag.load.json" --snap0 "$s0" --snap1 "$s1" \
    --errors "${misrouted/null/0}" --extra "misrouted=$misrouted" --extra "rule_changes=$changes" >>"$ROWS"
}

# measure_noisy SUBJECT SCENARIO — a good client's paced latency run (unmarked requests, so the
# original workload's traffic) alone, then again while one abusive client runs against the same
# subject: a window-0 h2c client with 256 big streams, 5,000 silent sockets, or 100 slow
# uploads. p99_us is under abuse, quiet_p99_us alone; rss_kb is the subject's RSS at the end of
# the abusive run; errors are the good client's failed or unfinished requests under abuse.
measure_noisy() {
  local subject=$1 scenario=$2 tag=$RUN/$2.$1 kind conns=0 target=$SUBJ_H1 good pid rss quiet_p50 quiet_p99
  case $scenario in
    noisy-h2-window0) kind=h2-window0 target=$SUBJ_H2 good=(-m 1 "http://$SUBJ_H2/hello") ;;
    noisy-silent-5k) kind=silent conns=$NOISY_SILENT good=(--h1 "http://$SUBJ_H1/hello") ;;
    noisy-slow-uploads) kind=slow-uploads conns=100 good=(--h1 "http://$SUBJ_H1/hello") ;;
  esac
  # good_run TAG — the paced run, bounded in time; prints the latency summary (JSON).
  good_run() {
    timeout $((LAT_N / 1000 + 30)) "${PIN0[@]}" h2load -t 1 -c "$LAT_CLIENTS" --rps $((1000 / LAT_CLIENTS)) \
      -n "$LAT_N" --log-file="$1.lat.log" "${good[@]}" >"$1.lat.txt" 2>&1 || true
    bench latency "$1.lat.log"
  }
  "${PIN0[@]}" h2load -t 1 -c 10 -n "$WARM_N" "${good[@]}" >"$tag.warm.txt" 2>&1 || true
  quiet
  good_run "$tag.quiet" >"$tag.quiet.json"
  read -r quiet_p50 quiet_p99 < <("$PY" -c "import json; d=json.load(open('$tag.quiet.json')); \
print(d.get('p50_us') or 'null', d.get('p99_us') or 'null')" 2>/dev/null || echo "null null")
  rm -f "$tag.noisy.status"
  start_bg "$tag.noisy.log" "${PIN0[@]}" "$PY" "$BENCH_PY" noisy --kind "$kind" --addr "$target" \
    --conns "$conns" --status "$tag.noisy.status" --max-seconds $((LAT_N / 1000 + 120))
  pid=$BG_PID
  for _ in {1..600}; do [[ -s $tag.noisy.status ]] && break; sleep 0.1; done
  [[ -s $tag.noisy.status ]] || { log "$scenario/$subject: the abusive client did not get going"; stop_pid "$pid"; return 1; }
  sleep 1 # let the abuse take hold (windows fill, uploads start, sockets sit)
  good_run "$tag.noisy" >"$tag.noisy.json"
  rss=$(bench rss "$SUBJ_PID")
  stop_pid "$pid"
  local missing
  missing=$("$PY" -c "import json; d=json.load(open('$tag.noisy.json')); \
print($LAT_N - d.get('samples', 0) - d.get('bad', 0))" 2>/dev/null || echo "$LAT_N")
  bench row --scenario "$scenario" --subject "$subject" --latency "$tag.noisy.json" --errors "$missing" \
    --rss-kb "$rss" --extra "quiet_p50_us=$quiet_p50" --extra "quiet_p99_us=$quiet_p99" \
    --extra "abuse=$(tr -d ' ' <"$tag.noisy.status")" >>"$ROWS"
}

# skip_row SCENARIO SUBJECT NOTE — an all-null row that says why.
skip_row() {
  bench row --scenario "$1" --subject "$2" --extra "note=$3" >>"$ROWS"
}

run_one() {
  local scenario=$1 subject=$2 mark=foobar why
  [[ $scenario == http1-10k-rules ]] && mark=dev-10000
  if [[ $scenario == rule-churn && $subject == direct ]]; then
    return 0 # no rules to change
  fi
  if [[ $subject == ktx-router && -n $ROUTER_MISSING ]]; then
    skip_row "$scenario" "$subject" "not measured: $ROUTER_MISSING"
    return 0
  fi
  log "$scenario / $subject"
  if ! start_subject "$subject" "$scenario"; then
    skip_row "$scenario" "$subject" "not measured: $subject did not start (see loadtests/out/run)"
    return 0
  fi
  if ! why=$(check_routing "$subject" "$scenario" "$mark"); then
    log "$scenario / $subject: routing check failed: $why"
    skip_row "$scenario" "$subject" "not measured: routing check failed: $why"
    stop_subject "$subject"
    return 0
  fi
  case $scenario in
    http1-keepalive | http1-10k-rules | h2c | grpc-unary) measure_load "$subject" "$scenario" "$mark" ;;
    stream-100mb) measure_stream "$subject" ;;
    idle-5k) measure_idle "$subject" ;;
    rule-churn) measure_churn "$subject" ;;
    noisy-*) measure_noisy "$subject" "$scenario" ;;
  esac || skip_row "$scenario" "$subject" "measurement failed (see loadtests/out/run/run.log)"
  stop_subject "$subject"
}

# ------------------------------------------------------------------ main
main() {
  log "loadtests/run.sh $ORIG_ARGS (mode $MODE)"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  (($(ulimit -n) >= 4 * IDLE_CONNS / 2 + 1000)) ||
    log "open-file limit $(ulimit -n) is low for $IDLE_CONNS idle connections; idle-5k may fail"
  ((INSTALL)) && install_tools
  [[ -x $PY ]] || PY=$(command -v python3)
  for tool in nginx haproxy h2load taskset curl python3 ss; do command -v $tool >/dev/null || die "missing $tool"; done
  (($(nproc) >= 2)) || die "needs at least 2 CPUs for pinning (have $(nproc))"
  local port busy=()
  for port in $(seq "$PORT_BASE" $((PORT_BASE + 9))); do
    ss -Htln "sport = :$port" | grep -q . && busy+=("$port")
  done
  ((${#busy[@]} == 0)) || die "ports ${busy[*]} are in use; set KTX_BENCH_PORT_BASE to a free block of ten"
  build

  "$PY" -c "import sys; sys.stdout.buffer.write(bytes([0,0,0,0,4,0x0a,2])+b'hi')" >"$RUN/unary.bin"
  head -c 1048576 /dev/zero >"$RUN/1mb.bin"
  [[ -s $OUT/100mb.bin ]] || head -c 104857600 /dev/zero >"$OUT/100mb.bin"
  ln -sf "$OUT/100mb.bin" "$RUN/100mb.bin"

  local setup_seconds=$SECONDS
  start_backends
  local scenario subject
  IFS=, read -r -a scenarios <<<"$SCENARIOS"
  IFS=, read -r -a subjects <<<"$SUBJECTS"
  for scenario in "${scenarios[@]}"; do
    for subject in "${subjects[@]}"; do
      run_one "$scenario" "$subject"
    done
  done

  NOTES+=("direct: the load generator talks to the shadow backend itself; its CPU column is the backend's own cost, for scale. It has no rules, so rule-churn has no direct row.")
  NOTES+=("nginx (kt-connect style): one 'if (\$http_VERSION = ...)' per rule + proxy_pass to upstreams with keepalive 64, proxy_http_version 1.1, Connection \"\"; gRPC via grpc_pass. h2c is accepted by 'listen ... http2' and proxied to the backend over HTTP/1.1 (nginx proxy_pass cannot speak h2); gRPC goes h2 to h2. http1-10k-rules uses a 'map' (hash lookup) instead of 10,000 'if' blocks: the closest honest equivalent, and cheaper per request than a rule list. rule-churn rewrites nginx.conf and reloads (SIGHUP) every 100 ms, which is how kt-connect's router applies changes; CPU includes retired workers (cutime).")
  NOTES+=("haproxy: one worker thread (nbthread 1), header ACL routing, http-reuse always; h2c front end to h2 servers ('proto h2'). http1-10k-rules and rule-churn use a map file (map_str); rule-churn edits it over the runtime API (add map / del map) every 100 ms without reloading.")
  NOTES+=("ktx-router: one port for HTTP/1.1 and h2c (sniffed), ${ROUTER_ARGS[*]:-no --threads flag} (--http-ports: the port is declared HTTP, as ktx does for a Service port named http; silent clients are then not passed through as plain TCP); rule-churn rewrites the routes file (atomic rename) every 100 ms. errors in rule-churn = failed requests + requests that reached the stuntman instead of the shadow.")
  NOTES+=("stream-100mb: curl POSTs 100 MiB (-T, so with Expect: 100-continue) to /sink; CPU µs/req is per 100 MiB request; rps is uploads per second; mib_per_s in results.json. nginx runs with proxy_request_buffering off and client_max_body_size 0 so it streams like the others.")
  NOTES+=("idle-5k: $IDLE_CONNS HTTP/1.1 keep-alive connections, one request each, then idle; rss_kb = (RSS after - RSS before) / open connections, summed over the subject's processes; afterwards 1 in ${IDLE_CHECK_EVERY} of them is used again and one found closed counts as an error.")
  NOTES+=("noisy-*: a good client (h2load, ${LAT_CLIENTS} connections paced to 1k rps, unmarked requests to /hello; h2c for noisy-h2-window0, HTTP/1.1 otherwise) measures latency alone (quiet_p99_us) and then while one abusive client runs against the same subject (p99_us): noisy-h2-window0 = one h2c connection with SETTINGS_INITIAL_WINDOW_SIZE=0 and 256 GET /bytes?n=65536 streams that never grants window; noisy-silent-5k = $NOISY_SILENT TCP connections that send nothing; noisy-slow-uploads = 100 HTTP/1.1 POSTs announcing 100 MiB and sending 1 KiB every 100 ms. rss_kb = the subject's RSS under abuse (KB); errors = the good client's failed or unfinished requests under abuse.")
  [[ -z $ROUTER_MISSING ]] || NOTES+=("ktx-router was NOT measured: $ROUTER_MISSING. Its rows are empty; no numbers were invented.")

  local machine versions
  machine="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)"
  versions="$(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}'), $(h2load --version | head -1), $(curl --version | head -1 | awk '{print "curl " $2}'), ktx git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'uncommitted (no HEAD)')"
  local notes_json
  notes_json=$(printf '%s\n' "${NOTES[@]}" | "$PY" -c 'import json,sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin if l.strip()]))')
  COMMAND="loadtests/run.sh${ORIG_ARGS:+ $ORIG_ARGS}" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" MACHINE="$machine" \
    VERSIONS="$versions" MODE_DESC="$MODE: $REPS throughput run(s) of h2load -D $TPUT_D per measurement, median kept (HTTP/1.1 -c $H1_CLIENTS; h2 -c $H2_CLIENTS -m $H2_STREAMS), latency runs -n $LAT_N at 1k rps, $STREAM_REPS×100 MiB, $IDLE_CONNS idle connections, rule churn for $CHURN_D; measurements took $((SECONDS - setup_seconds)) s (plus ${setup_seconds} s of install/build checks)" \
    NOTES_JSON="$notes_json" "$PY" - >"$RUN/meta.json" <<'EOF'
import json, os
print(json.dumps({
    "command": os.environ["COMMAND"], "date": os.environ["DATE"], "machine": os.environ["MACHINE"],
    "versions": os.environ["VERSIONS"], "mode": os.environ["MODE_DESC"],
    "notes": json.loads(os.environ["NOTES_JSON"]),
}))
EOF
  mkdir -p "$RESULTS_DIR"
  bench report --rows "$ROWS" --meta "$RUN/meta.json" --json-out "$RESULTS_DIR/results.json" --md-out "$RESULTS_DIR/RESULTS.md"
  log "wrote $RESULTS_DIR/results.json and $RESULTS_DIR/RESULTS.md (${SECONDS}s)"
}

main

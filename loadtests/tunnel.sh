#!/usr/bin/env bash
# loadtests/tunnel.sh — the ktx tunnel vs `ssh -R` (configured like kt-connect's remote forward)
# vs a direct TCP connection, in one run, on loopback.
#
# Two "machines" share the box: the cluster side (ktx-shadow or sshd, and the load client that
# plays the in-cluster caller) runs on core 1; the laptop side (the ktx end or the ssh client,
# and the sink that plays the developer's process) on core 0. Every byte crosses the tunnel.
#
# Scenarios (subjects direct, ktx-tunnel, ssh-R; rows in results.json):
#   tunnel-1stream     one stream downloads 1 GiB (MiB/s, median of 3; CPU ms/GiB of the tunnel's
#                      processes); 64-byte request/response paced at 1,000/s
#                      (p50/p99, 10 connections); a new connection per request at 50/s (new-conn p50/p99)
#   tunnel-1stream-up  one stream uploads 1 GiB, the other way (cluster → laptop: a request
#                      body to the developer's process); MiB/s, median of 3; CPU ms/GiB
#   tunnel-100streams  100 streams download at once for 10 s (aggregate MiB/s, slowest and
#                      fastest stream, Jain's index); 1,000 idle streams (RSS KiB per stream)
#   tunnel-rtt100      through a relay adding 50 ms each way: one stream downloads 256 MiB;
#                      request/response at 50/s over 10 connections; new connections at 20/s
#
# Usage: loadtests/tunnel.sh [--quick] [--no-build] [--subjects LIST] [--scenarios LIST]
#                            [--out-dir DIR]
#   --quick      smaller runs (about a minute once built)
#   --no-build   use the release binaries already in $CARGO_TARGET_DIR
#   --subjects   comma list of direct,ktx-tunnel,ssh-R (default: all)
#   --scenarios  comma list of tunnel-1stream,tunnel-1stream-up,tunnel-100streams,tunnel-rtt100
#                (default: all)
#   --out-dir    where results.json and RESULTS.md are merged (default: loadtests/, only for a
#                full run of all subjects and scenarios; loadtests/out/ otherwise)
# Only this script's rows and RESULTS.md section are replaced; run.sh's stay. Logs go to
# loadtests/out/tunnel/. Everything listens on 127.0.0.1; every load run is bounded.
set -euo pipefail

ORIG_ARGS="$*"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
REPORT=$HERE/lib/tunnel_report.py
report() { python3 "$REPORT" "$@"; }

ALL_SUBJECTS="direct,ktx-tunnel,ssh-R"
ALL_SCENARIOS="tunnel-1stream,tunnel-1stream-up,tunnel-100streams,tunnel-rtt100"
QUICK=0 BUILD=1 SUBJECTS=$ALL_SUBJECTS SCENARIOS=$ALL_SCENARIOS RESULTS_DIR=""

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "tunnel.sh: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --subjects) SUBJECTS=${2:?}; shift ;;
    --scenarios) SCENARIOS=${2:?}; shift ;;
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
has() { [[ ",$1," == *",$2,"* ]]; }

# ------------------------------------------------------------------ sizes
GIB=$((1 << 30)) MIB=$((1 << 20))
if ((QUICK)); then
  ONE_BYTES=$((256 * MIB)) ONE_REPS=1 LAT_S=3 FAIR_S=3 IDLE=1000 RTT_BYTES=$((64 * MIB))
  MODE="quick: 256 MiB single-stream (1 run), 3 s latency runs, 3 s of 100 streams, 1,000 idle streams, 64 MiB at 100 ms"
else
  ONE_BYTES=$GIB ONE_REPS=3 LAT_S=10 FAIR_S=10 IDLE=1000 RTT_BYTES=$((256 * MIB))
  MODE="full: 1 GiB single-stream (median of 3), 10 s latency runs, 10 s of 100 streams, 1,000 idle streams, 256 MiB at 100 ms"
fi
CLUSTER_CPU=1 LAPTOP_CPU=0

SINK_PORT=27100 SHADOW_PORT=27101 TUNNEL_PORT=27102 ADMIN_PORT=27103
SSH_RPORT=27104 SSHD_PORT=27122 RELAY_PORT=27105
L=127.0.0.1 # ports below the ephemeral range (32768+), so no client socket holds them

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}"
BIN=$CARGO_TARGET_DIR/release
BENCH=$BIN/ktx-tunnel-bench
SHADOW=$BIN/ktx-shadow

OUT=$HERE/out/tunnel
rm -rf "$OUT"
mkdir -p "$OUT"
LOG=$OUT/run.log
ROWS=$OUT/rows.jsonl
: >"$ROWS"
TMP=$(mktemp -d /tmp/ktx-tunnel-bench.XXXXXX)
NOTES=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ processes we own
PIDS=()
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOGFILE CMD... — runs CMD in the background; its PID is in BG_PID.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# wait_port PORT — until something accepts on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in {1..100}; do
    (exec 3<>"/dev/tcp/$L/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

wait_gone() {
  for _ in {1..100}; do
    (exec 3<>"/dev/tcp/$L/$1") 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ tools and binaries
command -v taskset >/dev/null || die "taskset (util-linux) is missing"
command -v curl >/dev/null || die "curl is missing"
command -v setpriv >/dev/null || die "setpriv (util-linux) is missing"
if ! command -v setcap >/dev/null; then
  log "installing libcap2-bin (setcap; Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcap2-bin \
    >>"$LOG" 2>&1 || die "cannot install libcap2-bin"
fi
if [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh >/dev/null; then
  log "installing openssh-server and openssh-client (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client >>"$LOG" 2>&1 || die "cannot install OpenSSH"
fi
if ((BUILD)); then
  log "building release binaries (ktx-shadow, ktx-tunnel-bench)"
  (cd "$ROOT" && cargo build --release --locked -p ktx-shadow -p ktx-tunnel --bins) >>"$LOG" 2>&1 \
    || die "build failed; see $LOG"
fi
[[ -x $BENCH && -x $SHADOW ]] || die "missing $BENCH or $SHADOW (build without --no-build)"

# ------------------------------------------------------------------ fixed parts
"$BENCH" creds --out "$TMP/creds"
# ktx-shadow runs as its pod runs it: user 65532, the binary carrying cap_net_bind_service as a
# file capability (e2e/images.sh, e2e/Dockerfile). That makes its exec a secure one (AT_SECURE):
# glibc then ignores GLIBC_TUNABLES, so run as root the shadow would measure settings that never
# apply in a cluster.
SHADOW_POD_UID=65532
install -m 0755 "$SHADOW" "$TMP/ktx-shadow"
setcap cap_net_bind_service=+ep "$TMP/ktx-shadow" || die "setcap on the shadow failed"
SHADOW=$TMP/ktx-shadow
chmod a+x "$TMP" "$TMP/creds" # to reach the shadow's own credentials, which it alone reads
chown -R $SHADOW_POD_UID:$SHADOW_POD_UID "$TMP/creds/shadow"
start_bg "$OUT/sink.log" taskset -c $LAPTOP_CPU "$BENCH" sink --listen $L:$SINK_PORT
wait_port $SINK_PORT || die "the sink did not start"

mkdir -p "$TMP/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/id"
cp "$TMP/ssh/id.pub" "$TMP/ssh/authorized_keys"
# kt-connect's shadow runs sshd and ktctl asks it for a remote forward (tcpip-forward) to the
# local port; its Go client prefers aes128-gcm, and both ends keep the default 2 MiB windows.
cat >"$TMP/ssh/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress $L
HostKey $TMP/ssh/host_key
PidFile $TMP/ssh/sshd.pid
AuthorizedKeysFile $TMP/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
MaxStartups 100:30:200
LogLevel ERROR
EOF

# ------------------------------------------------------------------ subjects
SUBJECT_PIDS=() TARGET=""
start_relay() { # start_relay TO_PORT — a 50 ms/50 ms relay on RELAY_PORT
  start_bg "$OUT/relay.log" "$BENCH" relay --listen $L:$RELAY_PORT --to $L:"$1" --delay-ms 50
  SUBJECT_PIDS+=("$BG_PID")
  wait_port $RELAY_PORT || die "the relay did not start"
}

start_subject() { # start_subject SUBJECT RTT(0|1)
  local subject=$1 rtt=$2
  SUBJECT_PIDS=() MEASURED_PIDS=()
  case $subject in
    direct)
      if ((rtt)); then start_relay $SINK_PORT; TARGET=$L:$RELAY_PORT; else TARGET=$L:$SINK_PORT; fi
      ;;
    ktx-tunnel)
      start_bg "$OUT/shadow.log" taskset -c $CLUSTER_CPU setpriv --reuid $SHADOW_POD_UID \
        --regid $SHADOW_POD_UID --clear-groups "$SHADOW" --ports $SHADOW_PORT \
        --listen-addr $L --tunnel-port $TUNNEL_PORT --admin $L:$ADMIN_PORT \
        --tls-dir "$TMP/creds/shadow" --threads 1 --log-format text --log-level warn
      SUBJECT_PIDS+=("$BG_PID") MEASURED_PIDS+=("$BG_PID")
      wait_port $TUNNEL_PORT || die "ktx-shadow did not start (see $OUT/shadow.log)"
      local via=$TUNNEL_PORT
      if ((rtt)); then start_relay $TUNNEL_PORT; via=$RELAY_PORT; fi
      start_bg "$OUT/ktx.log" taskset -c $LAPTOP_CPU "$BENCH" ktx --tls-dir "$TMP/creds/ktx" \
        --tunnel $L:$via --map $SHADOW_PORT=$L:$SINK_PORT
      SUBJECT_PIDS+=("$BG_PID") MEASURED_PIDS+=("$BG_PID")
      for _ in {1..100}; do
        curl -sf "http://$L:$ADMIN_PORT/readyz" >/dev/null && break
        sleep 0.1
      done
      curl -sf "http://$L:$ADMIN_PORT/readyz" >/dev/null || die "the tunnel did not come up (see $OUT/ktx.log)"
      TARGET=$L:$SHADOW_PORT
      ;;
    ssh-R)
      start_bg "$OUT/sshd.log" taskset -c $CLUSTER_CPU /usr/sbin/sshd -D -e -f "$TMP/ssh/sshd_config"
      SUBJECT_PIDS+=("$BG_PID") MEASURED_PIDS+=("$BG_PID")
      wait_port $SSHD_PORT || die "sshd did not start (see $OUT/sshd.log)"
      local via=$SSHD_PORT
      if ((rtt)); then start_relay $SSHD_PORT; via=$RELAY_PORT; fi
      start_bg "$OUT/ssh.log" taskset -c $LAPTOP_CPU ssh -N -F /dev/null -i "$TMP/ssh/id" \
        -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ExitOnForwardFailure=yes -o LogLevel=ERROR -o ServerAliveInterval=5 \
        -c aes128-gcm@openssh.com -R $L:$SSH_RPORT:$L:$SINK_PORT -p "$via" root@$L
      SUBJECT_PIDS+=("$BG_PID") MEASURED_PIDS+=("$BG_PID")
      wait_port $SSH_RPORT || die "ssh -R did not come up (see $OUT/ssh.log)"
      TARGET=$L:$SSH_RPORT
      ;;
  esac
}

stop_subject() {
  stop_pids "${SUBJECT_PIDS[@]}"
  wait_gone $RELAY_PORT; wait_gone $SSH_RPORT; wait_gone $SHADOW_PORT; wait_gone $SSHD_PORT
  SUBJECT_PIDS=() MEASURED_PIDS=()
}

cpu_ms() { if ((${#MEASURED_PIDS[@]})); then report cpu "${MEASURED_PIDS[@]}"; else echo 0; fi; }
rss_kb() { if ((${#MEASURED_PIDS[@]})); then report rss "${MEASURED_PIDS[@]}"; else echo 0; fi; }

# load ARGS... — the load client on the cluster core, bounded in time.
load() { timeout 600 taskset -c $CLUSTER_CPU "$BENCH" load "$@"; }

# median_by FIELD FILES... — the file whose FIELD is the median.
median_by() {
  local field=$1
  shift
  python3 - "$field" "$@" <<'EOF'
import json, sys
field, files = sys.argv[1], sys.argv[2:]
vals = sorted((json.load(open(f))[field], f) for f in files)
print(vals[len(vals) // 2][1])
EOF
}

# ------------------------------------------------------------------ scenarios
# bulk_runs SCENARIO SUBJECT [ARGS...] — ONE_REPS transfers of ONE_BYTES (load throughput ARGS),
# each with the tunnel processes' CPU per GiB; leaves the median run in OUT/SCENARIO.SUBJECT.tput.json.
bulk_runs() {
  local base=$OUT/$1.$2 s=$2 files=() i c0 c1
  shift 2
  for ((i = 1; i <= ONE_REPS; i++)); do
    c0=$(cpu_ms)
    load throughput --target "$TARGET" --bytes $ONE_BYTES "$@" >"$base.tput$i.json"
    c1=$(cpu_ms)
    python3 - "$base.tput$i.json" $((c1 - c0)) $ONE_BYTES "$s" <<'EOF'
import json, sys
path, cpu, size, subject = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = json.load(open(path))
d["cpu_ms_per_gib"] = None if subject == "direct" else round(cpu / (size / 2**30))
json.dump(d, open(path, "w"))
EOF
    files+=("$base.tput$i.json")
  done
  cp "$(median_by mib_per_s "${files[@]}")" "$base.tput.json"
}

one_stream() { # one_stream SUBJECT
  local s=$1 base=$OUT/tunnel-1stream.$1
  bulk_runs tunnel-1stream "$s"
  load latency --target "$TARGET" --rate 1000 --seconds $LAT_S --conns 10 --size 64 >"$base.lat.json"
  load latency --target "$TARGET" --rate 50 --seconds $LAT_S --conns 10 --size 64 --new-conn \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"connect_p50_us": d["p50_us"], "connect_p99_us": d["p99_us"], "connect_errors": d["errors"]}))' \
    >"$base.conn.json"
  report row --scenario tunnel-1stream --subject "$s" --json "$base.tput.json" \
    --json "$base.lat.json" --json "$base.conn.json" --set rss_kb=null >>"$ROWS"
}

one_stream_up() { # one_stream_up SUBJECT
  local s=$1 base=$OUT/tunnel-1stream-up.$1
  bulk_runs tunnel-1stream-up "$s" --upload
  report row --scenario tunnel-1stream-up --subject "$s" --json "$base.tput.json" \
    --set p50_us=null --set p99_us=null --set rss_kb=null >>"$ROWS"
}

hundred_streams() { # hundred_streams SUBJECT
  local s=$1 base=$OUT/tunnel-100streams.$1 rss=null before after
  # Idle streams first, on fresh processes: after a throughput run the allocators keep freed
  # buffers, and new connections would reuse them without growing RSS.
  if [[ $s != direct ]]; then
    before=$(rss_kb)
    rm -f "$TMP/idle.ready" "$TMP/idle.release"
    load idle --target "$TARGET" --conns $IDLE --ready-file "$TMP/idle.ready" \
      --release-file "$TMP/idle.release" --max-hold 120 >"$base.idle.json" &
    local idle_pid=$!
    for _ in {1..1200}; do [[ -f $TMP/idle.ready ]] && break; sleep 0.1; done
    sleep 1 # let the last connections' buffers settle before reading RSS
    after=$(rss_kb)
    touch "$TMP/idle.release"
    wait $idle_pid || die "the idle client failed (see $base.idle.json)"
    rss=$(python3 -c "print(round(($after - $before) / $IDLE, 2))")
  fi
  load throughput --target "$TARGET" --streams 100 --seconds $FAIR_S >"$base.tput.json"
  report row --scenario tunnel-100streams --subject "$s" --json "$base.tput.json" \
    --set p50_us=null --set p99_us=null --set rss_kb="$rss" --set idle_streams=$IDLE >>"$ROWS"
}

rtt100() { # rtt100 SUBJECT
  local s=$1 base=$OUT/tunnel-rtt100.$1
  load throughput --target "$TARGET" --bytes $RTT_BYTES >"$base.tput.json"
  load latency --target "$TARGET" --rate 50 --seconds $LAT_S --conns 10 --size 64 --warmup 1 >"$base.lat.json"
  load latency --target "$TARGET" --rate 20 --seconds $LAT_S --conns 10 --size 64 --new-conn --warmup 1 \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"connect_p50_us": d["p50_us"], "connect_p99_us": d["p99_us"], "connect_errors": d["errors"]}))' \
    >"$base.conn.json"
  report row --scenario tunnel-rtt100 --subject "$s" --json "$base.tput.json" \
    --json "$base.lat.json" --json "$base.conn.json" --set rss_kb=null >>"$ROWS"
}

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
log "mode: $MODE; subjects $SUBJECTS; scenarios $SCENARIOS; load average $LOAD_START"
for scenario in ${SCENARIOS//,/ }; do
  for subject in ${SUBJECTS//,/ }; do
    log "$scenario / $subject"
    case $scenario in
      tunnel-1stream) start_subject "$subject" 0; one_stream "$subject" ;;
      tunnel-1stream-up) start_subject "$subject" 0; one_stream_up "$subject" ;;
      tunnel-100streams) start_subject "$subject" 0; hundred_streams "$subject" ;;
      tunnel-rtt100) start_subject "$subject" 1; rtt100 "$subject" ;;
      *) die "unknown scenario $scenario" ;;
    esac
    stop_subject
  done
done

# ------------------------------------------------------------------ report
NOTES+=("Pinning: cluster side (ktx-shadow or sshd, and the load client) on core $CLUSTER_CPU; laptop side (the ktx end or the ssh client, and the sink) on core $LAPTOP_CPU; the 100 ms relay is not pinned. ktx-shadow and the ktx end run one thread each; the ktx end is \`ktx-tunnel-bench ktx\` (the ktx-tunnel client library that \`ktx\` uses, with a TCP connector instead of the API server's port-forward); ktx-shadow runs as its pod runs it (user $SHADOW_POD_UID, cap_net_bind_service as a file capability, so a secure exec in which glibc ignores GLIBC_TUNABLES) with mimalloc (see shadow/src/main.rs); the ktx end runs with mimalloc too, as ktx does (control/src/main.rs).")
NOTES+=("ssh-R: OpenSSH sshd on 127.0.0.1:$SSHD_PORT with its own host key and authorized_keys in a temporary directory; \`ssh -N -R 127.0.0.1:$SSH_RPORT:127.0.0.1:$SINK_PORT -c aes128-gcm@openssh.com\` (the cipher kt-connect's Go client prefers; OpenSSH's default chacha20-poly1305 is slower here); default 2 MiB channel windows.")
NOTES+=("MiB/s: the sink sends, the load client receives (the developer's process answering the cluster). tunnel-100streams runs for a fixed time: aggregate = all bytes / time; per-stream spread and Jain's fairness index (1.0 = perfectly even) over the same window.")
NOTES+=("Latency: open loop at a fixed rate (1,000/s on loopback, 50/s at 100 ms, over 10 connections so that one request's timer slack (tokio's 1 ms timer) never delays the next on the same connection); a request due while its connection is still busy counts from its due time, so stalls are not hidden. p50/p99 = 64-byte request and echo on persistent connections; new-conn = connect, send 64 bytes, receive the echo, close, paced at 50/s (20/s at 100 ms) over 10 connections. CPU ms/GiB = user+system time of the tunnel's processes (both ends) per GiB moved.")
NOTES+=("RSS KiB/idle stream: RSS of both tunnel processes (sshd with its session children, or ktx-shadow and the ktx end), freshly started, with $IDLE established idle connections (each has carried one byte each way) minus before, divided by $IDLE.")
NOTES+=("tunnel-rtt100: a relay (ktx-tunnel-bench relay) holds every chunk 50 ms in each direction between the two ends (load client and sink for direct). It adds latency, not a bandwidth limit, and buffers up to 256 MiB per direction, so only windows kept end to end — the SSH channel window, the tunnel's HTTP/2 windows — meet the round trip; TCP's own window does not.")
NOTES+=("Ports (loopback): sink $SINK_PORT, shadow service $SHADOW_PORT, tunnel $TUNNEL_PORT, admin $ADMIN_PORT, sshd $SSHD_PORT, ssh -R $SSH_RPORT, relay $RELAY_PORT.")

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=$(git -C "$ROOT" status --porcelain -- tunnel shadow 2>/dev/null | head -1)
[[ -n $dirty ]] && rev="$rev + uncommitted tunnel/shadow changes"
ssh_v=$(ssh -V 2>&1)
printf '%s\n' "${NOTES[@]}" >"$OUT/notes.txt"
python3 - "$OUT/meta.json" "$OUT/notes.txt" <<EOF
import json, sys
json.dump({
  "command": "loadtests/tunnel.sh${ORIG_ARGS:+ $ORIG_ARGS}",
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "machine": "$cpu_model, $(nproc) CPUs, $mem, Linux $(uname -r), $os",
  "versions": "ktx git $rev, $ssh_v",
  "mode": "$MODE",
  "load": "1-minute load average $LOAD_START at the start, $(cut -d' ' -f1 /proc/loadavg) at the end (anything above 0 is other work sharing the two cores)",
  "notes": [l for l in open(sys.argv[2]).read().splitlines() if l],
}, open(sys.argv[1], "w"), indent=2)
EOF
mkdir -p "$RESULTS_DIR"
report merge --rows "$ROWS" --meta "$OUT/meta.json" --json "$RESULTS_DIR/results.json" --md "$RESULTS_DIR/RESULTS.md"
log "merged into $RESULTS_DIR/results.json and $RESULTS_DIR/RESULTS.md (${SECONDS}s)"

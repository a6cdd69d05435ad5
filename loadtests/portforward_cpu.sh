#!/usr/bin/env bash
# loadtests/portforward_cpu.sh — where the CPU of a port-forward goes, per process, on the e2e
# cluster: 100 MiB POSTed (laptop → pod) and then GOT (pod → laptop) through `ktx forward` (the
# API server's port-forward as ktx's tunnel rides it: SPDY, or the WebSocket with
# KTX_PORT_FORWARD=websocket in the environment) or through `kubectl port-forward` (SPDY),
# with the CPU time (utime+stime from /proc/PID/stat) that kube-apiserver, the kubelet,
# containerd (its CRI streaming server decodes the stream), the forwarder and the test backend
# in the pod spent on each transfer.
#
# Usage: loadtests/portforward_cpu.sh [--kubectl] [--reps N] [KTX_BINARY]
#   KTX_BINARY  default $CARGO_TARGET_DIR/release/ktx (~/.cache/ktx/target by default)
#   --kubectl   measure `kubectl port-forward` instead of `ktx forward`
#   --reps N    transfers per direction (default 2)
# Needs the e2e cluster up with the test images loaded (e2e/cluster up; e2e/images.sh --load),
# and root for /proc of the cluster's processes. Runs in its own namespace, deleted at the end;
# every transfer is bounded by curl -m 120.
set -euo pipefail

MODE=ktx REPS=2 KTX=""
while (($#)); do
  case $1 in
    --kubectl) MODE=kubectl ;;
    --reps) REPS=${2:?}; shift ;;
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "portforward_cpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) KTX=$1 ;;
  esac
  shift
done
KTX=${KTX:-${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}/release/ktx}
export KUBECONFIG=${KUBECONFIG:-/var/lib/ktx-e2e/admin.kubeconfig}
K=${KTX_E2E_KUBECTL:-/var/lib/ktx-e2e/bin/kubectl}
[[ $MODE == kubectl || -x $KTX ]] || { echo "no ktx binary at $KTX (build it: cargo build --release -p ktx)" >&2; exit 1; }
NS=ktx-pfcpu-$$
PORT=$((20000 + $$ % 10000))
TMP=$(mktemp -d)
FWD=""
cleanup() {
  [[ -n $FWD ]] && kill "$FWD" 2>/dev/null
  "$K" delete ns "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

"$K" create ns "$NS" >/dev/null
"$K" -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 1
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
      containers:
      - name: backend
        image: ktx.local/ktx-testbackend:dev
        imagePullPolicy: IfNotPresent
        args: ["--listen", "0.0.0.0:8080", "--name", "backend"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080, targetPort: http}]
EOF
"$K" -n "$NS" rollout status deploy/backend --timeout=120s >/dev/null
head -c $((100 << 20)) /dev/urandom >"$TMP/100mb.bin"

if [[ $MODE == kubectl ]]; then
  "$K" -n "$NS" port-forward deploy/backend "$PORT:8080" >"$TMP/fwd.log" 2>&1 &
else
  "$KTX" -n "$NS" forward backend "$PORT:8080" >"$TMP/fwd.log" 2>&1 &
fi
FWD=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/hello" && break; sleep 0.1; done

snap() {
  for n in kube-apiserver kubelet containerd ktx-testbackend; do
    for p in $(pgrep -x "$n"); do echo "$n $p $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)"; done
  done
  echo "$MODE-forwarder $FWD $(awk '{print $14+$15}' "/proc/$FWD/stat")"
}
measure() {
  local what=$1 t0 t1
  shift
  snap >"$TMP/a"
  t0=$(date +%s%N)
  "$@"
  t1=$(date +%s%N)
  snap >"$TMP/b"
  python3 - "$what" $(((t1 - t0) / 1000000)) "$TMP/a" "$TMP/b" "$(getconf CLK_TCK)" <<'PY'
import collections, sys
what, ms, a, b, tck = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def load(p):
    return {(n, pid): int(v) for n, pid, v in (line.split() for line in open(p))}
# Only processes alive at both ends (one that started or ended between them, say a test
# backend of an earlier run still terminating, would count its whole life).
sa, sb = load(a), load(b)
d = collections.Counter()
for key in sa.keys() & sb.keys():
    d[key[0]] += sb[key] - sa[key]
print(f"{what}: {100 * 1000 / max(ms, 1):.0f} MiB/s; CPU ms per 100 MiB: "
      + ", ".join(f"{k} {v * 1000 // tck}" for k, v in d.most_common()))
PY
}
curl -s -m 120 -o /dev/null -X POST -T "$TMP/100mb.bin" "http://127.0.0.1:$PORT/sink" # warm-up
echo "# $MODE port-forward (KTX_PORT_FORWARD=${KTX_PORT_FORWARD:-auto}), $("$K" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
for ((i = 0; i < REPS; i++)); do
  measure "POST (laptop → pod)" curl -s -m 120 -o /dev/null -X POST -T "$TMP/100mb.bin" "http://127.0.0.1:$PORT/sink"
  measure "GET  (pod → laptop)" curl -s -m 120 -o /dev/null "http://127.0.0.1:$PORT/bytes?n=$((100 << 20))"
done

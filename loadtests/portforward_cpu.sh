#!/usr/bin/env bash
# loadtests/portforward_cpu.sh — where the CPU of a port-forward goes, per process, on the e2e
# cluster: 100 MiB POSTed (laptop → pod) and then GOT (pod → laptop) through `ktx forward` (the
# API server's port-forward as ktx's tunnel rides it: SPDY, or the WebSocket with
# KTX_PORT_FORWARD=websocket in the environment) or through `kubectl port-forward` (SPDY),
# with the CPU time (utime+stime from /proc/PID/stat) that kube-apiserver, the kubelet,
# containerd (its CRI streaming server decodes the stream), the forwarder and the test backend
# in the pod spent on each transfer.
#
# --mesh measures the marked request of `loadtests/cluster.sh`'s ktx-mesh row instead: `ktx mesh`
# of the Deployment with a local ktx-testbackend, and a busybox pod that wgets 100 MiB with the
# mark through Service → ktx-router → ktx-shadow → tunnel (port-forward) → ktx → the local
# backend (bytes flow laptop → pod), adding ktx-router, ktx-shadow and the local backend to the
# processes counted (`kubectl exec` carries only wget's empty output; its start, ~0.1 s, is in
# the MiB/s).
#
# Usage: loadtests/portforward_cpu.sh [--kubectl | --mesh] [--reps N] [KTX_BINARY]
#   KTX_BINARY  default $CARGO_TARGET_DIR/release/ktx (~/.cache/ktx/target by default); --mesh
#               also needs ktx-testbackend beside it
#   --kubectl   measure `kubectl port-forward` instead of `ktx forward`
#   --mesh      measure the marked download through `ktx mesh` (see above)
#   --reps N    transfers per direction (default 2)
# Needs the e2e cluster up with the test images loaded (e2e/cluster up; e2e/images.sh --load),
# and root for /proc of the cluster's processes. Runs in its own namespace, deleted at the end;
# every transfer is bounded (curl -m 120, timeout 120).
set -euo pipefail

MODE=ktx REPS=2 KTX=""
while (($#)); do
  case $1 in
    --kubectl) MODE=kubectl ;;
    --mesh) MODE=mesh ;;
    --reps) REPS=${2:?}; shift ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "portforward_cpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) KTX=$1 ;;
  esac
  shift
done
KTX=${KTX:-${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}/release/ktx}
export KUBECONFIG=${KUBECONFIG:-/var/lib/ktx-e2e/admin.kubeconfig}
K=${KTX_E2E_KUBECTL:-/var/lib/ktx-e2e/bin/kubectl}
[[ $MODE == mesh && ! -x $(dirname "$KTX")/ktx-testbackend ]] &&
  { echo "no ktx-testbackend beside $KTX (cargo build --release -p ktx-testbackend)" >&2; exit 1; }
[[ $MODE == kubectl || -x $KTX ]] || { echo "no ktx binary at $KTX (build it: cargo build --release -p ktx)" >&2; exit 1; }
NS=ktx-pfcpu-$$
PORT=$((20000 + $$ % 10000))
TMP=$(mktemp -d)
FWD="" LOCAL=""
cleanup() {
  [[ -n $FWD ]] && kill -INT "$FWD" 2>/dev/null && wait "$FWD" 2>/dev/null
  [[ -n $LOCAL ]] && kill "$LOCAL" 2>/dev/null
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
SERVER=$("$K" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')

if [[ $MODE == mesh ]]; then
  "$(dirname "$KTX")/ktx-testbackend" --listen "127.0.0.1:$PORT" --name developer >"$TMP/local.log" 2>&1 &
  LOCAL=$!
  "$K" -n "$NS" run wget --image=ktx.local/busybox:dev --image-pull-policy=IfNotPresent \
    --restart=Never --command -- /bin/sleep 3600 >/dev/null
  "$K" -n "$NS" wait --for=condition=Ready pod/wget --timeout=120s >/dev/null
  "$KTX" -n "$NS" mesh backend --expose "$PORT:8080" --versionMark cpu >"$TMP/fwd.log" 2>&1 &
elif [[ $MODE == kubectl ]]; then
  "$K" -n "$NS" port-forward deploy/backend "$PORT:8080" >"$TMP/fwd.log" 2>&1 &
else
  "$KTX" -n "$NS" forward backend "$PORT:8080" >"$TMP/fwd.log" 2>&1 &
fi
FWD=$!
if [[ $MODE == mesh ]]; then
  # The e2e cluster runs no DNS: the Service by its address.
  IP=$("$K" -n "$NS" get svc backend -o jsonpath='{.spec.clusterIP}')
  marked() { timeout 120 "$K" -n "$NS" exec wget -- wget -q -O "$1" --header 'VERSION: cpu' "http://$IP:8080$2"; }
  for _ in $(seq 120); do [[ $(marked - / 2>/dev/null) == developer ]] && break; sleep 0.5; done
  [[ $(marked - / 2>/dev/null) == developer ]] || { echo "the mesh never answered; ktx said:" >&2; cat "$TMP/fwd.log" >&2; exit 1; }
else
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/hello" && break; sleep 0.1; done
fi

snap() {
  for n in kube-apiserver kubelet containerd ktx-testbackend ktx-router ktx-shadow; do
    for p in $(pgrep -x "$n"); do
      [[ $p == "$LOCAL" ]] && continue
      echo "$n $p $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)"
    done
  done
  [[ -n $LOCAL ]] && echo "local-backend $LOCAL $(awk '{print $14+$15}' "/proc/$LOCAL/stat")"
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
if [[ $MODE == mesh ]]; then
  echo "# marked download through ktx mesh, $SERVER"
  marked /dev/null "/bytes?n=$((100 << 20))" # warm-up
  for ((i = 0; i < REPS; i++)); do
    measure "marked GET (laptop → pod)" marked /dev/null "/bytes?n=$((100 << 20))"
  done
  exit 0
fi
head -c $((100 << 20)) /dev/urandom >"$TMP/100mb.bin"
curl -s -m 120 -o /dev/null -X POST -T "$TMP/100mb.bin" "http://127.0.0.1:$PORT/sink" # warm-up
echo "# $MODE port-forward (KTX_PORT_FORWARD=${KTX_PORT_FORWARD:-auto}), $SERVER"
for ((i = 0; i < REPS; i++)); do
  measure "POST (laptop → pod)" curl -s -m 120 -o /dev/null -X POST -T "$TMP/100mb.bin" "http://127.0.0.1:$PORT/sink"
  measure "GET  (pod → laptop)" curl -s -m 120 -o /dev/null "http://127.0.0.1:$PORT/bytes?n=$((100 << 20))"
done

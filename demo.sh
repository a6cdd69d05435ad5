#!/usr/bin/env bash
# ktx's main job, on loopback: one Service's traffic split by a header between the original
# workload and a developer's process — HTTP/1.1 and h2c — with the rule changed live.
#
# Until `ktx mesh` runs against a cluster (see the README's status), this starts the real
# ktx-router between two real backends on 127.0.0.1 and shows what it does. Stops everything
# it started when it ends.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ktx/target}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building ktx-router and the test backend (first time: a few minutes)"
cargo build --quiet -p ktx-router -p ktx-testbackend
bin="$CARGO_TARGET_DIR/debug"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ORIG=127.0.0.1:47180 DEV=127.0.0.1:47181 ROUTER=127.0.0.1:47080 ADMIN=127.0.0.1:47901
for a in $ORIG $DEV $ROUTER $ADMIN; do
  if (exec 3<>/dev/tcp/${a%:*}/${a#*:}) 2>/dev/null; then echo "port ${a#*:} is in use; stop what uses it and retry" >&2; exit 1; fi
done
say "starting the 'original' workload on $ORIG and the developer's process on $DEV"
"$bin/ktx-testbackend" --listen "$ORIG" --name original --log-level warn & pids+=($!)
"$bin/ktx-testbackend" --listen "$DEV" --name developer-laptop --log-level warn & pids+=($!)

cat >"$work/routes.yaml" <<YAML
default: { addrs: ["$ORIG"] }
rules:
  - session: foobar
    match: { headers: [{ name: VERSION, exact: foobar }] }
    target: { addrs: ["$DEV"] }
    onUnavailable: fallback
YAML
say "starting ktx-router on $ROUTER with one rule: VERSION: foobar → developer"
cat "$work/routes.yaml"
"$bin/ktx-router" --listen "$ROUTER" --admin "$ADMIN" --routes-file "$work/routes.yaml" --log-level warn & pids+=($!)
ready=0
for _ in $(seq 100); do curl -sf "http://$ADMIN/readyz" >/dev/null && { ready=1; break; }; sleep 0.1; done
[[ $ready == 1 ]] || { echo "ktx-router did not become ready; see its error above" >&2; exit 1; }

show() { printf '$'; printf ' %q' "$@"; echo; "$@"; }
say "HTTP/1.1 without the header → the original"
show curl -s "http://$ROUTER/"
say "HTTP/1.1 with 'VERSION: foobar' → the developer's process"
show curl -s -H 'VERSION: foobar' "http://$ROUTER/"
say "HTTP/2 (h2c) — each stream routed on its own headers"
show curl -s --http2-prior-knowledge "http://$ROUTER/"
show curl -s --http2-prior-knowledge -H 'VERSION: foobar' "http://$ROUTER/"

say "the developer leaves: the rule is removed live (no restart)"
printf 'default: { addrs: ["%s"] }\nrules: []\n' "$ORIG" >"$work/routes.next" && mv "$work/routes.next" "$work/routes.yaml"
sleep 0.3
show curl -s -H 'VERSION: foobar' "http://$ROUTER/"

say "what the router counted (from its /metrics)"
curl -s "http://$ADMIN/metrics" | grep -E '^ktx_router_(requests_total|table_version)'
say "done: everything started here is stopped"

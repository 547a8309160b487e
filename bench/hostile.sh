#!/usr/bin/env bash
# Hostile load, full size: 600 downloads never read, 600 uploads trickling a byte every 5 s, and
# 1500 silent connections against a server limited to 1024 file descriptors, each against a fresh
# quayside registry and a fresh Debian docker-registry (CNCF distribution 2.8), filesystem
# storage. During each, a well-behaved client sends manifest GETs for SECONDS; the table gives
# their p50/p99 latency, the GETs that failed (10 s timeout or not 200), how many misbehaving
# connections were opened, and how many of those the server still held open at the end.
# Usage: bench/hostile.sh   (SECONDS_EACH=20; QUAYSIDE_BIN skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
SECONDS_EACH=${SECONDS_EACH:-20}
command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }
if [ -z "${QUAYSIDE_BIN:-}" ]; then cargo build --release --locked -q -p quayside; fi
BIN=${QUAYSIDE_BIN:-$PWD/target/release/quayside}
work=$(mktemp -d)
server=""
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

head -c $((16 << 20)) /dev/urandom >"$work/blob"
BLOB="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
printf '{}' >"$work/config"
CONFIG="sha256:$(sha256sum "$work/config" | cut -d' ' -f1)"
MANIFEST="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$CONFIG\",\"size\":2},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$BLOB\",\"size\":$((16 << 20))}]}"

start() { # which fd-limit
  local port; port=$(free_port); ADDR="127.0.0.1:$port"
  rm -rf "$work/data"; mkdir -p "$work/data"
  if [ "$1" = quayside ]; then
    bash -c "ulimit -n $2; exec env RUST_LOG=error '$BIN' registry --listen $ADDR --data-dir '$work/data'" >"$work/server.log" 2>&1 &
  else
    cat >"$work/peer.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: $ADDR}
YML
    bash -c "ulimit -n $2; exec docker-registry serve '$work/peer.yml'" >"$work/server.log" 2>&1 &
  fi
  server=$!
  wait_up "$ADDR"
  push_monolithic "$ADDR" "$work/blob" "$BLOB" bench/app
  push_monolithic "$ADDR" "$work/config" "$CONFIG" bench/app
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "$MANIFEST" "http://$ADDR/v2/bench/app/manifests/v1"
}

printf '%-8s %-16s %10s %10s %9s %8s %10s\n' scenario server p50_ms p99_ms failed opened still_open
for scenario in stalled:600:65536 trickle:600:65536 silent:1500:1024; do
  IFS=: read -r name count fds <<<"$scenario"
  for which in quayside docker-registry; do
    start "$which" "$fds"
    read -r p50 p99 failed opened open < <(python3 bench/hostile_load.py "$ADDR" "$name" "$count" bench/app "$BLOB" "$SECONDS_EACH")
    printf '%-8s %-16s %10s %10s %9s %8s %10s\n' "$name" "$which" "$p50" "$p99" "$failed" "$opened" "$open"
    kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""
  done
done

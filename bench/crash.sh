#!/usr/bin/env bash
# Crash test: SIGKILL the registry at random moments while PUSHERS clients push blobs
# concurrently, KILLS times, restarting it on the same port each time. Then: every blob a client
# saw acknowledged (201) must be intact, no blob file may hold bytes that do not hash to its name,
# and `quayside gc` reclaims what the kills left behind.
# Usage: bench/crash.sh   (KILLS=200 PUSHERS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

KILLS=${KILLS:-200}
PUSHERS=${PUSHERS:-16}
cargo build --release --locked -q -p quayside
BIN=$PWD/target/release/quayside
work=$(mktemp -d)
pids=()
reg_pid=""
trap 'kill "${pids[@]}" $reg_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(free_port)
REG="127.0.0.1:$port"
start() { RUST_LOG=error "$BIN" registry --listen "$REG" --data-dir "$work/data" >>"$work/registry.log" 2>&1 & reg_pid=$!; }
start; wait_up "$REG"

pusher() { # id
  local i=0
  while [ ! -e "$work/stop" ]; do
    i=$((i + 1))
    local f="$work/blob-$1-$i"
    head -c $(( (RANDOM % 1024 + 64) * 1024 )) /dev/urandom >"$f"
    local d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST --data-binary "@$f" \
      "http://$REG/v2/crash/p$1/blobs/uploads/?digest=$d" || true)
    [ "$code" = 201 ] && echo "p$1 $d" >>"$work/acked-$1"
    [ "$code" = 000 ] && echo x >>"$work/cut-$1"
    rm -f "$f"
  done
}
for p in $(seq 1 "$PUSHERS"); do pusher "$p" & pids+=($!); done

for k in $(seq 1 "$KILLS"); do
  sleep "0.$((RANDOM % 6 + 1))"
  kill -9 "$reg_pid" 2>/dev/null || true
  wait "$reg_pid" 2>/dev/null || true
  start
  for _ in $(seq 200); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.02; done
done
touch "$work/stop"; wait "${pids[@]}" 2>/dev/null || true

acked=$(cat "$work"/acked-* 2>/dev/null | wc -l)
cut=$(cat "$work"/cut-* 2>/dev/null | wc -l)
lost=0
while read -r repo d; do
  got=$(curl -s "http://$REG/v2/crash/$repo/blobs/$d" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$d" ] || { lost=$((lost + 1)); echo "LOST $repo $d"; }
done < <(cat "$work"/acked-*)
bad=0; visible=0
while read -r f; do
  visible=$((visible + 1))
  name=$(basename "$(dirname "$f")")
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$name" ] || { bad=$((bad + 1)); echo "PARTIAL $f"; }
done < <(find "$work/data/docker/registry/v2/blobs" -name data -type f)
uploads=$(find "$work/data/docker/registry/v2/repositories" -path '*/_uploads/*' -name startedat | wc -l)
gc=$("$BIN" gc --data-dir "$work/data" --gc-grace 0s --gc-upload-max-age 0s)
echo "kills $KILLS, pushers $PUSHERS"
echo "pushes acknowledged $acked, cut by a kill $cut"
echo "acknowledged blobs verified $((acked - lost)), lost $lost"
echo "blob files visible $visible, partial or corrupt $bad"
echo "upload sessions left by kills $uploads"
echo "gc: $gc"
[ "$lost" -eq 0 ] && [ "$bad" -eq 0 ]

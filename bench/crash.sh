#!/usr/bin/env bash
# Crash test: SIGKILL the registry at random moments while PUSHERS clients push images
# concurrently, KILLS times, restarting it on the same port each time. The registry collects
# garbage every 300 ms (grace 5 s), so kills also land in the middle of collections; every other
# push uploads its layer in a chunk sent twice at once (a retry racing its first attempt). Then:
# every image a client saw acknowledged (manifest 201) must pull whole, no blob file may hold
# bytes that do not hash to its name, and `quayside gc` reclaims what the kills left behind.
# Usage: bench/crash.sh   (KILLS=200 PUSHERS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

KILLS=${KILLS:-200}
PUSHERS=${PUSHERS:-16}
# QUAYSIDE_BIN: a binary built already (skips the release build).
if [ -z "${QUAYSIDE_BIN:-}" ]; then cargo build --release --locked -q -p quayside; fi
BIN=${QUAYSIDE_BIN:-$PWD/target/release/quayside}
work=$(mktemp -d)
pids=()
reg_pid=""
trap 'kill "${pids[@]}" $reg_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(free_port)
REG="127.0.0.1:$port"
start() {
  RUST_LOG=error,registry::gc=info "$BIN" registry --listen "$REG" --data-dir "$work/data" \
    --gc-interval 300ms --gc-grace 5s >>"$work/registry.log" 2>&1 &
  reg_pid=$!
}
CONFIG='{}'
CONFIG_DIGEST="sha256:$(printf '%s' "$CONFIG" | sha256sum | cut -d' ' -f1)"

# The layer: monolithic, or chunked with the chunk PATCHed twice at once. Prints the status.
push_layer() { # pusher iteration file digest size
  local base="http://$REG/v2/crash/p$1/blobs/uploads/"
  if (($2 % 2)); then
    curl -s -o "$work/body-$1" -w '%{http_code}' --max-time 10 -X POST --data-binary "@$3" "$base?digest=$4" || true
    return
  fi
  local loc
  loc=$(curl -s -D - -o /dev/null --max-time 10 -X POST "$base" | location || true)
  [ -n "$loc" ] || { echo 000; return; }
  loc=$(absolute "$REG" "$loc")
  for n in 1 2; do
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PATCH -H "Content-Range: 0-$(($5 - 1))" \
      -H 'Content-Type: application/octet-stream' --data-binary "@$3" "$loc" >"$work/patch-$1-$n" &
  done
  wait
  # Both cut by a kill: the chunk is not in, as a client would see.
  grep -q 202 "$work/patch-$1-1" "$work/patch-$1-2" || { echo 000; return; }
  curl -s -o "$work/body-$1" -w '%{http_code}' --max-time 10 -X PUT "$(with_query "$loc" "digest=$4")" || true
}
start; wait_up "$REG"

pusher() { # id
  local i=0
  while [ ! -e "$work/stop" ]; do
    i=$((i + 1))
    local f="$work/blob-$1-$i"
    head -c $(( (RANDOM % 1024 + 64) * 1024 )) /dev/urandom >"$f"
    local d size code
    d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    size=$(stat -c %s "$f")
    code=$(curl -s -o "$work/body-$1" -w '%{http_code}' --max-time 10 -X POST --data-binary "$CONFIG" \
      "http://$REG/v2/crash/p$1/blobs/uploads/?digest=$CONFIG_DIGEST" || true)
    [ "$code" = 201 ] && code=$(push_layer "$1" "$i" "$f" "$d" "$size")
    if [ "$code" = 201 ]; then
      local m="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$CONFIG_DIGEST\",\"size\":2},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$d\",\"size\":$size}]}"
      code=$(curl -s -o "$work/body-$1" -w '%{http_code}' --max-time 10 -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" \
        "http://$REG/v2/crash/p$1/manifests/t$i" || true)
    fi
    case "$code" in
      201) echo "p$1 t$i $d" >>"$work/acked-$1" ;;
      # 100: curl saw only "100 Continue" before the kill.
      000 | 100) echo x >>"$work/cut-$1" ;;
      5*) echo "$code$(grep -o '"code":"[A-Z_]*"' "$work/body-$1" | cut -d'"' -f4 | sed 's/^/-/')" >>"$work/5xx-$1" ;;
      *) echo "$code$(grep -o '"code":"[A-Z_]*"' "$work/body-$1" | cut -d'"' -f4 | sed 's/^/-/')" >>"$work/4xx-$1" ;;
    esac
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
counts() { cat "$@" 2>/dev/null | sort | uniq -c | tr -s ' \n' ' ' || true; }
refused=$(counts "$work"/4xx-*)
errors=$(counts "$work"/5xx-*)
lost=0
while read -r repo tag d; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/crash/$repo/manifests/$tag")
  got=$(curl -s "http://$REG/v2/crash/$repo/blobs/$d" | sha256sum | cut -d' ' -f1)
  [ "$status" = 200 ] && [ "sha256:$got" = "$d" ] || { lost=$((lost + 1)); echo "LOST $repo:$tag $d"; }
done < <(cat "$work"/acked-*)
bad=0; visible=0
while read -r f; do
  visible=$((visible + 1))
  name=$(basename "$(dirname "$f")")
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$name" ] || { bad=$((bad + 1)); echo "PARTIAL $f"; }
done < <(find "$work/data/docker/registry/v2/blobs" -name data -type f)
gc_failed=$(grep -c 'garbage collection failed' "$work/registry.log" || true)
gc_runs=$(( $(grep -c 'garbage collection' "$work/registry.log" || true) - gc_failed ))
uploads=$(find "$work/data/docker/registry/v2/repositories" -path '*/_uploads/*' -name startedat | wc -l)
gc=$("$BIN" gc --data-dir "$work/data" --gc-grace 0s --gc-upload-max-age 0s)
echo "kills $KILLS, pushers $PUSHERS"
echo "images acknowledged $acked, cut by a kill $cut, refused (4xx) ${refused:-none}, 5xx ${errors:-none}"
echo "acknowledged images verified $((acked - lost)), lost $lost"
echo "gc runs completed across the $((KILLS + 1)) registry processes $gc_runs, failed $gc_failed"
echo "blob files visible $visible, partial or corrupt $bad"
echo "upload sessions left by kills $uploads"
echo "gc: $gc"
[ "$lost" -eq 0 ] && [ "$bad" -eq 0 ] && [ -z "$errors" ]

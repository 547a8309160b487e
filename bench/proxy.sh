#!/usr/bin/env bash
# Pull throughput through `quayside proxy` against pulling straight from `quayside registry`, in
# the same run (release builds, local disk), the paths taking turns; median of ROUNDS. A third
# column relays through bench/floor.py, a bare splice loop: what any relay costs here.
# Usage: bench/proxy.sh   (needs curl); PROXY_ARGS="--splice false" measures the pooled relay
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

BLOB_MIB=${BLOB_MIB:-256}
PAR=${PAR:-16}
PAR_MIB=${PAR_MIB:-16}
ROUNDS=${ROUNDS:-3}

# QUAYSIDE_BIN: a release binary built elsewhere instead of this tree's.
BIN=${QUAYSIDE_BIN:-target/release/quayside}
[ -n "${QUAYSIDE_BIN:-}" ] || cargo build --release --locked -q -p quayside
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

port=$(free_port)
RUST_LOG=warn "$BIN" registry --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/r.log" 2>&1 &
pids+=($!); REG="127.0.0.1:$port"; wait_up "$REG"
port=$(free_port)
RUST_LOG=warn "$BIN" proxy --listen "127.0.0.1:$port" --registry-host 127.0.0.1 --registry-port "${REG##*:}" ${PROXY_ARGS:-} >"$work/p.log" 2>&1 &
pids+=($!); PROXY_PID=$!; PROXY="127.0.0.1:$port"; wait_up "$PROXY"
# What any relay costs on this machine: bench/floor.py splices each answer through a pipe and does
# nothing else (no HTTP parsing, a thread per connection).
port=$(free_port)
python3 bench/floor.py relay "$port" "${REG##*:}" &
pids+=($!); FLOOR="127.0.0.1:$port"; wait_up "$FLOOR"

head -c $((BLOB_MIB << 20)) /dev/urandom >"$work/big"
BIG="sha256:$(sha256sum "$work/big" | cut -d' ' -f1)"
push_monolithic "$REG" "$work/big" "$BIG" bench/proxy
declare -a PARD
for i in $(seq 1 "$PAR"); do
  head -c $((PAR_MIB << 20)) /dev/urandom >"$work/p$i"
  PARD[$i]="sha256:$(sha256sum "$work/p$i" | cut -d' ' -f1)"
  push_monolithic "$REG" "$work/p$i" "${PARD[$i]}" bench/proxy
done
sync

declare -A S
# Every client asks to close: the floor relay knows an answer has ended only when the registry
# closes its connection.
pull() { # name host
  local t0 t1 i
  t0=$(now); curl -sf -H 'Connection: close' -o /dev/null "http://$2/v2/bench/proxy/blobs/$BIG"; t1=$(now)
  S[$1.single]+=" $(mibps "$BLOB_MIB" "$t0" "$t1")"
  t0=$(now)
  for i in $(seq 1 "$PAR"); do curl -sf -H 'Connection: close' -o /dev/null "http://$2/v2/bench/proxy/blobs/${PARD[$i]}" & done
  wait $(jobs -p | grep -v -x -F "$(printf '%s\n' "${pids[@]}")") 2>/dev/null || true
  t1=$(now)
  S[$1.parallel]+=" $(mibps "$((PAR * PAR_MIB))" "$t0" "$t1")"
}
for _ in $(seq 1 "$ROUNDS"); do pull direct "$REG"; pull proxy "$PROXY"; pull floor "$FLOOR"; done

pct() { python3 -c "print(f'{$1/$2*100:.0f}%')"; }
row() {
  local d p f; d=$(median ${S[direct.$2]}); p=$(median ${S[proxy.$2]}); f=$(median ${S[floor.$2]})
  printf '%-38s %10s %10s %8s %12s %8s\n' "$1" "$d" "$p" "$(pct "$p" "$d")" "$f" "$(pct "$f" "$d")"
}
printf '\n%-38s %10s %10s %8s %12s %8s\n' "pull MiB/s (median of $ROUNDS, $(nproc) cores)" direct proxy ratio \
  "bare relay" ratio
row "one ${BLOB_MIB} MiB blob" single
row "${PAR}x${PAR_MIB} MiB in parallel" parallel
printf '%-38s %10s %10s\n' "proxy peak RSS (MiB)" "" "$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$PROXY_PID/status")"

#!/usr/bin/env bash
# Side-by-side benchmark: quayside registry vs CNCF distribution 2.8 (Debian's docker-registry),
# both on local disk on this machine, in the same run. Prints one table with the ratio.
# Usage: bench/registry.sh            local disk (needs curl, wrk, docker-registry; installs the last two)
#        STORAGE=s3 bench/registry.sh  both on one moto S3 server (installs moto[server])
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

BLOB_MIB=${BLOB_MIB:-256}
CHUNK_MIB=${CHUNK_MIB:-8}
PAR=${PAR:-16}
PAR_MIB=${PAR_MIB:-16}
WRK_SECONDS=${WRK_SECONDS:-10}
STORAGE=${STORAGE:-filesystem}

for tool in wrk docker-registry; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk docker-registry >/dev/null; }
done
# QUAYSIDE_BIN: a release binary built elsewhere (say, of another commit) instead of this tree's.
BIN=${QUAYSIDE_BIN:-target/release/quayside}
[ -n "${QUAYSIDE_BIN:-}" ] || cargo build --release --locked -q -p quayside

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT


start_moto() {
  command -v moto_server >/dev/null || python3 -m pip install -q 'moto[server]'
  local port; port=$(free_port)
  moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  pids+=($!); MOTO="http://127.0.0.1:$port"
  for _ in $(seq 200); do curl -s -o /dev/null "$MOTO" && break; sleep 0.05; done
  curl -sf -X PUT "$MOTO/peer-bench" >/dev/null
}

quayside_storage_args() {
  if [ "$STORAGE" = s3 ]; then
    echo --storage s3 --s3-bucket quayside-bench --s3-region us-east-1 --s3-endpoint "$MOTO" \
      --s3-path-style true --s3-access-key bench --s3-secret-key bench
  else
    echo --data-dir "$work/q-data"
  fi
}

peer_storage_yml() {
  if [ "$STORAGE" = s3 ]; then
    # Both registries stream blobs themselves: distribution's default redirect to a presigned
    # URL would measure the emulator, not the registry.
    echo "storage: {s3: {accesskey: bench, secretkey: bench, region: us-east-1, regionendpoint: $MOTO, bucket: peer-bench, secure: false, v4auth: true}, delete: {enabled: true}, redirect: {disable: true}}"
  else
    echo "storage: {filesystem: {rootdirectory: $work/p-data}, delete: {enabled: true}}"
  fi
}

start_quayside() {
  local port; port=$(free_port)
  # shellcheck disable=SC2046
  RUST_LOG=warn "$BIN" registry --listen "127.0.0.1:$port" $(quayside_storage_args) >"$work/q.log" 2>&1 &
  pids+=($!); Q_PID=$!; Q="127.0.0.1:$port"; wait_up "$Q"
}
start_peer() {
  local port; port=$(free_port)
  cat >"$work/peer.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
$(peer_storage_yml)
http: {addr: 127.0.0.1:$port}
YML
  env -u AWS_CA_BUNDLE docker-registry serve "$work/peer.yml" >"$work/p.log" 2>&1 &
  pids+=($!); P_PID=$!; P="127.0.0.1:$port"; wait_up "$P"
}

# Test data: one big blob, PAR small blobs, a manifest.
head -c $((BLOB_MIB << 20)) /dev/urandom >"$work/big"
BIG_DIGEST="sha256:$(sha256sum "$work/big" | cut -d' ' -f1)"
for i in $(seq 1 "$PAR"); do head -c $((PAR_MIB << 20)) /dev/urandom >"$work/par$i"; done
# The chunked run pushes the same content under another digest-identical name would dedupe, so
# it gets its own blob: the big one with its first byte changed.
cp "$work/big" "$work/big2"; printf 'x' | dd of="$work/big2" bs=1 count=1 conv=notrunc status=none
BIG2_DIGEST="sha256:$(sha256sum "$work/big2" | cut -d' ' -f1)"

# Flush the test data now, so its write-back does not compete with the first server's pushes.
sync

# One process and one connection for the whole push, as real clients do (bench/chunked_push.py).
push_chunked() { # host file digest repo
  python3 bench/chunked_push.py "$1" "$4" "$2" "$CHUNK_MIB" "$3"
}

# Each throughput metric runs ROUNDS times, the two servers taking turns, and the median is kept:
# this machine's virtual disk swings with write-back load, and turns expose both servers to it.
ROUNDS=${ROUNDS:-3}

# timed NAME METRIC MIB CMD...: runs CMD, records MiB/s and the CPU ms per MiB of the server
# and of the clients (curl) CMD ran.
timed() {
  local name=$1 metric=$2 mib=$3 t0 t1 c0 c1 k0 k1; shift 3
  c0=$(cpu_ms "${PID[$name]}"); k0=$(children_ms); t0=$(now)
  "$@"
  t1=$(now); k1=$(children_ms); c1=$(cpu_ms "${PID[$name]}")
  S[$name.$metric]+=" $(mibps "$mib" "$t0" "$t1")"
  S[$name.$metric.cpu]+=" $(per "$c0" "$c1" "$mib")"
  S[$name.$metric.client]+=" $(per "$k0" "$k1" "$mib")"
}

measure_push() { # name host round
  timed "$1" push "$BLOB_MIB" push_monolithic "$2" "$work/big" "$BIG_DIGEST" "bench/mono$3"
  timed "$1" chunked "$BLOB_MIB" push_chunked "$2" "$work/big2" "$BIG2_DIGEST" "bench/chunked$3"
}

pull_parallel() { # host
  local i
  for i in $(seq 1 "$PAR"); do
    curl -sfL -o /dev/null "http://$1/v2/bench/par/blobs/${PAR_DIGEST[$i]}" &
  done
  wait_jobs
}

measure_pull() { # name host
  timed "$1" pull "$BLOB_MIB" curl -sfL -o /dev/null "http://$2/v2/bench/mono1/blobs/$BIG_DIGEST"
  timed "$1" parallel "$((PAR * PAR_MIB))" pull_parallel "$2"
}

# The kernel's share of a pull, which no server avoids: the same blob sent by a bare sendfile(2)
# loop (bench/floor.py), its copy in this script's directory, so already in the page cache.
start_floor() {
  local port; port=$(free_port)
  python3 bench/floor.py serve "$work/big" "$port" &
  pids+=($!); PID[floor]=$!; FLOOR="127.0.0.1:$port"; wait_up "$FLOOR"
}

prepare_pulls() { # host
  local i
  for i in $(seq 1 "$PAR"); do push_monolithic "$1" "$work/par$i" "${PAR_DIGEST[$i]}" bench/par; done
  printf '{}' >"$work/cfg"
  push_monolithic "$1" "$work/cfg" "sha256:$(sha256sum "$work/cfg" | cut -d' ' -f1)" bench/mono1
  local manifest
  manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$(sha256sum "$work/cfg" | cut -d' ' -f1)" "$BIG_DIGEST" $((BLOB_MIB << 20)))
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "$manifest" "http://$1/v2/bench/mono1/manifests/latest"
}

measure_manifests() { # name host connections
  local c0 c1 out="$work/wrk-$1-$3.txt"
  c0=$(cpu_ms "${PID[$1]}")
  wrk -t2 -c"$3" -d"${WRK_SECONDS}s" --latency -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$2/v2/bench/mono1/manifests/latest" >"$out"
  c1=$(cpu_ms "${PID[$1]}")
  R[$1.rps$3]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out")
  R[$1.p50_$3]=$(awk '$1=="50%" {print $2}' "$out")
  R[$1.p99_$3]=$(awk '$1=="99%" {print $2}' "$out")
  R[$1.rps$3.cpu]=$(per "$c0" "$c1" "$(awk '/requests in/ {print $1}' "$out")")
}

wait_jobs() { for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j";; esac; done; }

declare -A R S PID
declare -a PAR_DIGEST
for i in $(seq 1 "$PAR"); do PAR_DIGEST[$i]="sha256:$(sha256sum "$work/par$i" | cut -d' ' -f1)"; done
[ "$STORAGE" = s3 ] && start_moto
start_quayside; start_peer
PID[quayside]=$Q_PID; PID[peer]=$P_PID
for round in $(seq 1 "$ROUNDS"); do
  measure_push quayside "$Q" "$round"; measure_push peer "$P" "$round"
done
prepare_pulls "$Q"; prepare_pulls "$P"
[ "$STORAGE" = filesystem ] && start_floor
for round in $(seq 1 "$ROUNDS"); do
  measure_pull quayside "$Q"; measure_pull peer "$P"
  [ "$STORAGE" = filesystem ] && timed floor pull "$BLOB_MIB" curl -sf -o /dev/null "http://$FLOOR/"
done
for conns in 32 256; do
  measure_manifests quayside "$Q" "$conns"; measure_manifests peer "$P" "$conns"
done
for name in quayside peer; do R[$name.rss]=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/${PID[$name]}/status"); done
for k in "${!S[@]}"; do R[$k]=$(median ${S[$k]}); done

ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}x' if b else 'n/a')"; }
printf '\n%-36s %10s %12s %7s   %s\n' "$STORAGE: median of $ROUNDS, $(nproc) cores" quayside distribution ratio \
  "CPU per unit, quayside / distribution: server; clients"
row() { # label key unit-of-cpu [ratio]
  local ratio=${4-$(ratio "${R[quayside.$2]}" "${R[peer.$2]}")} cpu=""
  [ -n "$3" ] && cpu="${R[quayside.$2.cpu]} / ${R[peer.$2.cpu]} ms per $3"
  [ -n "${R[quayside.$2.client]:-}" ] && cpu+="; clients ${R[quayside.$2.client]} / ${R[peer.$2.client]}"
  printf '%-36s %10s %12s %7s   %s\n' "$1" "${R[quayside.$2]}" "${R[peer.$2]}" "$ratio" "$cpu"
}
row "push monolithic ${BLOB_MIB} MiB (MiB/s)" push MiB
row "push chunked ${CHUNK_MIB} MiB PATCHes (MiB/s)" chunked MiB
row "pull ${BLOB_MIB} MiB (MiB/s)" pull MiB
row "pull ${PAR}x${PAR_MIB} MiB parallel (MiB/s)" parallel MiB
for conns in 32 256; do
  row "manifest GET, $conns conns (req/s)" "rps$conns" request
  row "  p50 latency" "p50_$conns" "" ""
  row "  p99 latency" "p99_$conns" "" ""
done
row "peak RSS (MiB)" rss "" "$(ratio "${R[peer.rss]}" "${R[quayside.rss]}") less"
if [ "$STORAGE" = filesystem ]; then
  printf '%-36s %10s %12s %7s   %s\n' "kernel floor: pull ${BLOB_MIB} MiB (MiB/s)" "${R[floor.pull]}" "" "" \
    "${R[floor.pull.cpu]} ms per MiB; clients ${R[floor.pull.client]} (bench/floor.py, one sendfile loop)"
fi

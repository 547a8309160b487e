#!/usr/bin/env bash
# The pull-through cache against CNCF distribution 2.8's proxy mode (Debian's docker-registry with
# proxy.remoteurl), both in front of the same upstream (a quayside registry on local disk), all on
# loopback. Prints the time of a pull (manifest + every blob, read to the end) made directly from
# the upstream, cold through each cache and warm through each cache, the time to the first byte
# of a cold blob, and how many blob GETs the upstream received when CLIENTS clients pulled one
# cold blob at once through each cache.
# Usage: bench/mirror.sh   (QUAYSIDE_BIN=path skips the release build; LAYER_MIB, LAYERS, CLIENTS)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

LAYER_MIB=${LAYER_MIB:-64}
LAYERS=${LAYERS:-3}
CLIENTS=${CLIENTS:-16}

command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }
BIN=${QUAYSIDE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked -q -p quayside
  BIN=target/release/quayside
fi
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

port=$(free_port)
RUST_LOG=warn "$BIN" registry --listen "127.0.0.1:$port" --data-dir "$work/upstream" >"$work/u.log" 2>&1 &
pids+=($!); U="127.0.0.1:$port"; wait_up "$U"
port=$(free_port)
RUST_LOG=warn "$BIN" registry --listen "127.0.0.1:$port" --data-dir "$work/cache" \
  --upstream "up.test=http://$U" --upstream-spool-dir "$work" >"$work/q.log" 2>&1 &
pids+=($!); Q="127.0.0.1:$port"; wait_up "$Q"
port=$(free_port)
cat >"$work/peer.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/peer}, cache: {blobdescriptor: inmemory}}
proxy: {remoteurl: "http://$U"}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/peer.yml" >"$work/p.log" 2>&1 &
pids+=($!); P="127.0.0.1:$port"; wait_up "$P"

python3 - "$U" "$Q" "$P" "$LAYER_MIB" "$LAYERS" "$CLIENTS" <<'PY'
import hashlib, json, os, sys, threading, time, urllib.request
up, q, p = sys.argv[1:4]
layer_mib, layers, clients = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    return urllib.request.urlopen(req)

def push_blob(repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    request("POST", f"http://{up}/v2/{repo}/blobs/uploads/?digest={digest}", data).read()
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": len(data)}

def push_image(repo, seed):
    blobs = [push_blob(repo, os.urandom(layer_mib << 20)) for _ in range(layers)]
    config = push_blob(repo, json.dumps({"seed": seed, "architecture": "amd64", "os": "linux"}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": blobs}).encode()
    request("PUT", f"http://{up}/v2/{repo}/manifests/v1", manifest,
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).read()

def drain(resp):
    n = 0
    while chunk := resp.read(1 << 20):
        n += len(chunk)
    return n

def pull(host, repo):
    start = time.perf_counter()
    m = json.load(request("GET", f"http://{host}/v2/{repo}/manifests/v1",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}))
    total = 0
    for blob in [m["config"]] + m["layers"]:
        total += drain(request("GET", f"http://{host}/v2/{repo}/blobs/{blob['digest']}"))
    return time.perf_counter() - start, total

def upstream_blob_gets():
    text = request("GET", f"http://{up}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith('quayside_http_requests_total{route="blob",method="GET",status="200"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0

# One image per cache, so each cold pull is really cold; a third for the direct pull.
for repo, seed in (("lib/direct", 1), ("lib/q", 2), ("lib/p", 3)):
    push_image(repo, seed)
size = layers * layer_mib
rows = [("direct from the upstream", pull(up, "lib/direct")[0], None)]
q_cold, q_warm = pull(q, "up.test/lib/q")[0], pull(q, "up.test/lib/q")[0]
p_cold, p_warm = pull(p, "lib/p")[0], pull(p, "lib/p")[0]

def concurrent_cold(host, repo, upstream_repo):
    blob = push_blob(upstream_repo, os.urandom(layer_mib << 20))
    before = upstream_blob_gets()
    errors = []
    def one():
        try:
            got = drain(request("GET", f"http://{host}/v2/{repo}/blobs/{blob['digest']}"))
            assert got == blob["size"], got
        except Exception as e:  # counted, shown below
            errors.append(repr(e))
    threads = [threading.Thread(target=one) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    return upstream_blob_gets() - before, time.perf_counter() - start, len(errors)

def first_byte(host, repo, upstream_repo):
    blob = push_blob(upstream_repo, os.urandom(layer_mib << 20))
    start = time.perf_counter()
    resp = request("GET", f"http://{host}/v2/{repo}/blobs/{blob['digest']}")
    resp.read(1)
    elapsed = time.perf_counter() - start
    drain(resp)
    return elapsed * 1000

d_first = first_byte(up, "lib/direct", "lib/direct")
q_first = first_byte(q, "up.test/lib/q", "lib/q")
p_first = first_byte(p, "lib/p", "lib/p")
q_fetches, q_time, q_errors = concurrent_cold(q, "up.test/lib/q", "lib/q")
p_fetches, p_time, p_errors = concurrent_cold(p, "lib/p", "lib/p")

print(f"pull of {layers} x {layer_mib} MiB layers + config ({size} MiB), seconds and MiB/s")
print(f"{'':34}{'quayside':>16}{'distribution proxy':>22}")
print(f"{'direct from the upstream':34}{rows[0][1]:>9.2f} s {size / rows[0][1]:>4.0f}")
print(f"{'cold through the cache':34}{q_cold:>9.2f} s {size / q_cold:>4.0f}{p_cold:>15.2f} s {size / p_cold:>4.0f}")
print(f"{'warm through the cache':34}{q_warm:>9.2f} s {size / q_warm:>4.0f}{p_warm:>15.2f} s {size / p_warm:>4.0f}")
print(f"{'first byte of a cold blob (direct ' + f'{d_first:.1f} ms)':34}{q_first:>13.1f} ms{p_first:>19.1f} ms")
print(f"{clients} clients, one cold {layer_mib} MiB blob at once:")
print(f"{'  upstream blob GETs':34}{q_fetches:>16}{p_fetches:>22}")
print(f"{'  until the last client finished':34}{q_time:>14.2f} s{p_time:>20.2f} s")
print(f"{'  clients that failed':34}{q_errors:>16}{p_errors:>22}")
PY

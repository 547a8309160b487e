#!/usr/bin/env bash
# What a catalog page costs with 10,000 repositories: quayside registry against CNCF distribution
# 2.8 (Debian's docker-registry) serving the same data directory (distribution's layout), local
# disk. Prints the median time of a first page, a page from the middle and paging through all.
# Usage: bench/catalog.sh   (QUAYSIDE_BIN=path skips the release build; REPOS=N, ROUNDS=N)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

REPOS=${REPOS:-10000}
ROUNDS=${ROUNDS:-5}
PAGE=${PAGE:-100}

command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }
BIN=${QUAYSIDE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked -q -p quayside
  BIN=target/release/quayside
fi
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# REPOS repositories (a tenth of them two levels deep), each with one tag, as distribution lays
# them out; the catalog reads only the tree, so no blobs are needed.
python3 - "$work/data" "$REPOS" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
digest = "a" * 64
for i in range(n):
    name = f"team{i % 100:02d}/app{i:05d}" if i % 10 == 0 else f"app{i:05d}"
    repo = os.path.join(root, "docker/registry/v2/repositories", name)
    for d in ("_layers", "_uploads", f"_manifests/revisions/sha256/{digest}", "_manifests/tags/v1/current"):
        os.makedirs(os.path.join(repo, d), exist_ok=True)
    for link in (f"_manifests/revisions/sha256/{digest}/link", "_manifests/tags/v1/current/link"):
        with open(os.path.join(repo, link), "w") as f:
            f.write(f"sha256:{digest}")
PY

port=$(free_port)
RUST_LOG=warn "$BIN" registry --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/q.log" 2>&1 &
pids+=($!); Q="127.0.0.1:$port"; wait_up "$Q"
port=$(free_port)
cat >"$work/peer.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/peer.yml" >"$work/p.log" 2>&1 &
pids+=($!); P="127.0.0.1:$port"; wait_up "$P"

python3 - "$Q" "$P" "$ROUNDS" "$PAGE" "$REPOS" <<'PY'
import json, statistics, sys, time, urllib.request
q, p, rounds, page, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def get(host, path):
    with urllib.request.urlopen(f"http://{host}{path}") as r:
        link = r.headers.get("Link")
        return json.load(r)["repositories"], link

def timed(f):
    start = time.perf_counter(); out = f(); return time.perf_counter() - start, out

def walk(host):
    names, path = [], f"/v2/_catalog?n={page}"
    while path:
        got, link = get(host, path)
        names += got
        path = link.split(">")[0].lstrip("<") if link else None
    return names

results = {}
for name, host in (("quayside", q), ("distribution", p)):
    everything = walk(host)
    assert len(everything) == total, (name, len(everything))
    middle = everything[total // 2]
    first_t, middle_t, all_t = [], [], []
    for _ in range(rounds):
        first_t.append(timed(lambda: get(host, f"/v2/_catalog?n={page}"))[0])
        middle_t.append(timed(lambda: get(host, f"/v2/_catalog?n={page}&last={middle}"))[0])
        all_t.append(timed(lambda: walk(host))[0])
    results[name] = [statistics.median(t) * 1000 for t in (first_t, middle_t, all_t)]

print(f"catalog with {total} repositories, pages of {page} (median of {rounds}, ms)")
print(f"{'':34}{'quayside':>12}{'distribution':>14}")
for i, what in enumerate(["first page", "page from the middle", f"all {total // page} pages"]):
    print(f"{what:34}{results['quayside'][i]:>12.1f}{results['distribution'][i]:>14.1f}")
PY

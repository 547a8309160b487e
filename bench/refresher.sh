#!/usr/bin/env bash
# The token refresher at scale: NAMESPACES labelled namespaces on the fake Kubernetes API
# (testkit::kube), GCR tokens from a local OAuth endpoint, the release `quayside token-refresher`
# as a process. Prints time until every namespace has its secret, API requests, token fetches,
# peak RSS. No peer runs here: deis-registry-token-refresher needs a real cluster and Go.
# Usage: bench/refresher.sh   (NAMESPACES=10000)
set -euo pipefail
cd "$(dirname "$0")/.."

NAMESPACES=${NAMESPACES:-10000}
cargo build --release --locked -q -p quayside
cargo build --release --locked -q -p quayside-testkit --example refresher_bench
target/release/examples/refresher_bench target/release/quayside "$NAMESPACES"

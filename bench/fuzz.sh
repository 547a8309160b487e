#!/usr/bin/env bash
# Bounded fuzzing of the parsers that read client input (reference/name/route, digest, Range and
# Content-Range, manifest), with cargo-fuzz (libFuzzer + AddressSanitizer). Not part of the test
# command: it needs cargo-fuzz and nightly flags (RUSTC_BOOTSTRAP=1 on this stable toolchain).
# Usage: bench/fuzz.sh   (SECONDS_PER_TARGET=60)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
printf '%-10s %12s %8s %s\n' target executions crashes corpus
for target in reference digest range manifest; do
  log=$(mktemp)
  status=0
  cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$SECONDS_PER_TARGET" >"$log" 2>&1 || status=$?
  runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1)
  crashes=$(ls "fuzz/artifacts/$target" 2>/dev/null | wc -l)
  corpus=$(ls "fuzz/corpus/$target" 2>/dev/null | wc -l)
  printf '%-10s %12s %8s %s\n' "$target" "${runs:-?}" "$crashes" "$corpus"
  if [ "$status" -ne 0 ]; then tail -30 "$log"; fi
  rm -f "$log"
done

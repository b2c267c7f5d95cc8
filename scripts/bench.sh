#!/usr/bin/env bash
# Runs every CPU benchmark program under $BUILD/bench.
set -euo pipefail
BUILD="${BUILD:-build}"
for b in "$BUILD"/bench/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b" "$@"
done

#!/usr/bin/env bash
# ASan + UBSan build of the CPU tests in build-asan/, then a run of the tests of the code that reads outside
# input (parsers, checkpoints, configs, results, fuzz loop). Only those sources are instrumented
# (SSMLAB_SANITIZE_SOURCES), so the rest of the build comes from ccache and the script fits a CI slot;
# SANITIZE_ALL=1 instruments every source (a full rebuild), FILTER=... picks other tests.
# LibTorch is not instrumented: its allocations still go through ASan's allocator, leak checking is off
# (LibTorch keeps static allocations to exit), and UBSan's vptr check is off (cmake/Sanitize.cmake).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BUILD="${BUILD:-build-asan}"
JOBS="${JOBS:-$(nproc)}"
sources='/(core/(io|sha256|error)|models/safetensors|train/(checkpoint|checksums|state_file)|experiments/(options_io|toml_limits|validate|results|sweep)|report/|tasks/mqar|fuzz/|tests/(fuzz|core|models/test_safetensors|experiments/(test_options_io|test_limits|test_results)|train/test_checkpoint))'
[ "${SANITIZE_ALL:-0}" = 1 ] && sources=""
FILTER="${FILTER:-FuzzLoop*:Safetensors*:Checkpoint*:OptionsIo*:Limits*:Bounds*:Checksums*:Results*:Jsonl*:Mqar*}"

start=$(date +%s)
BUILD="$BUILD" JOBS="$JOBS" SSMLAB_CMAKE_ARGS="-DSSMLAB_SANITIZE=address,undefined -DSSMLAB_SANITIZE_SOURCES=$sources \
  -DSSMLAB_BUILD_BENCH=OFF" bash "$here/build.sh"
built=$(date +%s)
cd "$root"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1
status=0
"$BUILD/tests/ssmlab_tests" --gtest_filter="$FILTER" --gtest_brief=1 || status=$?
end=$(date +%s)
echo "[sanitize] build $((built - start)) s, tests $((end - built)) s, exit $status (filter: $FILTER)"
exit $status

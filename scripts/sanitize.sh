#!/usr/bin/env bash
# ASan + UBSan run of the CPU tests of the code that reads outside input: parsers (safetensors, TOML, JSONL),
# checkpoints and checksums, configs and their bounds, results, text (tokenizer files, tar, token files), and the
# fuzz loop.
#   quick (default): build/ is built as usual (ccache), then sanitize/CMakeLists.txt compiles only that code
#     and its tests instrumented into build-asan/ and links the rest from build/ (a few minutes on 2 cores).
#   SANITIZE_ALL=1: every source instrumented (-DSSMLAB_SANITIZE=address,undefined) in build-asan-all/, all CPU
#     tests (a full rebuild; for CI with time).
# LibTorch is not instrumented: ASan still intercepts its allocations; leak checking is off (LibTorch keeps
# static allocations to exit) and so is UBSan's vptr check (classes cross into LibTorch without UBSan's RTTI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/env.sh"
JOBS="${JOBS:-$(nproc)}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1
cd "$root"
start=$(date +%s)
status=0
if [ "${SANITIZE_ALL:-0}" = 1 ]; then
  BUILD="${BUILD:-build-asan-all}"
  BUILD="$BUILD" JOBS="$JOBS" SSMLAB_CMAKE_ARGS="-DSSMLAB_SANITIZE=address,undefined -DSSMLAB_BUILD_BENCH=OFF \
    -DSSMLAB_CUDA=OFF" bash "$here/build.sh"
  built=$(date +%s)
  "$BUILD/tests/ssmlab_tests" --gtest_filter="${FILTER:-*}" --gtest_brief=1 || status=$?
else
  BUILD="${BUILD:-build-asan}"
  # The libraries the instrumented code links against, and the ssmlab binary (not the CUDA check or benches).
  [ -f build/CMakeCache.txt ] || BUILD=build JOBS="$JOBS" bash "$here/build.sh"
  cmake --build build -j "$JOBS" --target ssmlab ssmlab_report ssmlab_cli
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S sanitize -B "$BUILD" "${gen[@]+"${gen[@]}"}" -DCMAKE_BUILD_TYPE=Debug -DTorch_DIR="$(ssmlab_torch_dir)" \
          -DSSMLAB_BUILD="$root/build"
  fi
  cmake --build "$BUILD" -j "$JOBS"
  built=$(date +%s)
  "$BUILD/ssmlab_sanitize_tests" --gtest_filter="${FILTER:-*}" --gtest_brief=1 || status=$?
fi
end=$(date +%s)
echo "[sanitize] build $((built - start)) s, tests $((end - built)) s, exit $status"
exit $status

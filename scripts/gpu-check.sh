#!/usr/bin/env bash
# One call on the GPU machine: build with -j16 against the machine's own PyTorch (CUDA), run the test
# suite (CUDA tests included) and the benchmarks. Debian header packages that the GPU machine lacks are
# carried as .deb files in .debs/ (make them here with: scripts/gpu-check.sh --fetch-debs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "${1:-}" = "--fetch-debs" ]; then
  mkdir -p .debs && cd .debs
  apt-get download libtomlplusplus-dev libtomlplusplus3 libcli11-dev nlohmann-json3-dev libgtest-dev \
    libbenchmark-dev libbenchmark1debian libsqlite3-dev libsqlite3-0 zlib1g-dev libssl-dev libicu-dev libicu72 icu-devtools libgloo-dev
  exit 0
fi
source "$root/scripts/gpu-env.sh"
BUILD="${BUILD:-build-gpu}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$Torch_DIR" -DSSMLAB_CUDA=AUTO
# --quick: build the ops library and the tests only, run the CUDA tests and the GPU tables (kernel tuning).
if [ "${1:-}" = "--quick" ]; then
  cmake --build "$BUILD" -j 16 --target ssmlab_ops ssmlab_tests
  status=0
  "$BUILD/tests/ssmlab_tests" --gtest_filter="${FILTER:-*Cuda*}" --gtest_brief=1 || status=1
  # BENCH: which GPU tables (default all), e.g. BENCH=bench/gpu_ssd_scan.py.
  for s in ${BENCH:-bench/gpu_*.py}; do python3 "$s" "$BUILD/src/libssmlab_ops.so" || status=1; done
  exit $status
fi
cmake --build "$BUILD" -j 16
status=0
# PART=tests runs only the test suite and the Python example, PART=bench only the benchmarks and the end-to-end
# runs (for machines where one call has a time limit); the default runs both.
PART="${PART:-all}"
if [ "$PART" != bench ]; then
  # The report tests need gnuplot (scripts/setup.sh installs it); a GPU machine without it and without network
  # cannot run them: say so, and run everything else.
  exclude=()
  if ! command -v gnuplot >/dev/null; then
    echo "gpu-check: gnuplot is not installed on this machine: the Report* tests and readme.examples are NOT run here (CI runs them)"
    exclude=(-E '^Report|^readme\.')
  elif ! command -v chromium >/dev/null; then
    echo "gpu-check: chromium is not installed on this machine: ReportBrowser.* is NOT run here (CI runs it)"
    exclude=(-E '^ReportBrowser')
  fi
  (cd "$BUILD" && ctest --output-on-failure -j 8 --timeout 600 "${exclude[@]}") || status=1
  python3 python/example.py "$BUILD/src/libssmlab_ops.so" cuda || status=1
fi
[ "$PART" = tests ] && exit $status
# CPU benchmarks belong to the CPU machine (their reference rows take minutes); GPU_CHECK_CPU_BENCH=1 runs them.
if [ "${GPU_CHECK_CPU_BENCH:-0}" = 1 ]; then
  for b in "$BUILD"/bench/bench_*; do [ -x "$b" ] && "$b" --benchmark_min_time=0.2; done
fi
for s in bench/gpu_*.py; do python3 "$s" "$BUILD/src/libssmlab_ops.so" || status=1; done
# Every mixer's forward + backward tokens/s on the GPU (issue 5).
SSMLAB_BENCH_DEVICE=cuda "$BUILD/bench/bench_mixers" --benchmark_min_time=0.2 || status=1
# End to end on the GPU: the Mamba-2 MQAR config (chunked SSD kernels in training) and the quickstart (Mamba-1).
for cfg in configs/mamba2/mqar-small.toml configs/quickstart.toml; do
  rm -rf "/tmp/gpu-e2e-$(basename "$cfg" .toml)"
  "$BUILD/ssmlab" train "$cfg" --set train.device=cuda --set train.max_steps=600 \
    --out "/tmp/gpu-e2e-$(basename "$cfg" .toml)" | tail -3 || status=1
done
exit $status

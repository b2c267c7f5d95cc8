#!/usr/bin/env bash
# Long lab runs on the lent GPU machine (docs/GPU.md): builds the ssmlab binary only (against the machine's
# PyTorch, as scripts/gpu-check.sh), makes .data/cifar10 from the JPEG archives carried in .gpudata/ when it is
# missing, then runs the given command for at most LIMIT seconds (default 540) and packs the run folders: PACK
# (whole, checkpoints included: cut-off runs come back and resume in the next call) into $OUT/runs.tar.gz and
# PACK_LIGHT (without checkpoints/: results, metrics, figures, analyses) into $OUT/runs-light.tar.gz; $OUT brings
# back at most 16 MiB a file:
#   LIMIT=540 bash scripts/gpu-lab.sh build-gpu/ssmlab sweep configs/recency/attack.toml --gpus 0 --per-gpu 4
# A warm machine keeps build-gpu/, .data/ and runs/ between calls (it is given back after 30 s idle); a fresh one
# rebuilds: 115 s on an H200 machine (2026-12-07). Measured there: the four attack models of
# configs/recency/attack.toml packed on one H200 train 2 epochs of full sequential CIFAR-10 in about 100 s
# (about 50 s per epoch each, 826K tokens/s for attention), so the paper's 100 epochs take about 85 minutes.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source "$root/scripts/gpu-env.sh"
BUILD="${BUILD:-build-gpu}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ ! -f .data/cifar10/test_batch.bin ] && [ -f .gpudata/to_binary.py ]; then
  python3 .gpudata/to_binary.py .data/cifar10 || echo "gpu-lab: CIFAR-10 conversion failed"
fi
if [ ! -x "$BUILD/ssmlab" ] || [ "${REBUILD:-1}" = 1 ]; then
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$Torch_DIR" \
    -DSSMLAB_CUDA=AUTO -DSSMLAB_BUILD_TESTS=OFF -DSSMLAB_BUILD_BENCH=OFF > /tmp/gpu-lab-cmake.log 2>&1 \
    || { tail -30 /tmp/gpu-lab-cmake.log; exit 1; }
  cmake --build "$BUILD" -j 16 --target ssmlab_cli 2>&1 | tail -3
fi
# The carried libraries (ICU, TOML++ ...) are found through LD_LIBRARY_PATH: commands run outside this script
# must `source scripts/gpu-env.sh` first (else: "libicuuc.so.72: cannot open shared object file").
status=0
if [ $# -gt 0 ]; then
  timeout --signal=INT --kill-after=30 "${LIMIT:-540}" "$@"
  status=$?
  [ $status = 124 ] && echo "gpu-lab: stopped after ${LIMIT:-540} s (runs resume next call)"
fi
if [ -n "${OUT:-}" ]; then
  [ -n "${PACK:-}" ] && tar czf "$OUT/runs.tar.gz" $PACK
  [ -n "${PACK_LIGHT:-}" ] && tar czf "$OUT/runs-light.tar.gz" --exclude=checkpoints $PACK_LIGHT
  ls -la "$OUT"
fi
exit $status

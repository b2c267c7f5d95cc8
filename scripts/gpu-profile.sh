#!/usr/bin/env bash
# Kernel profile on the GPU machine: builds the ops library only, then Nsight Compute on one forward and one
# backward of the selective scan (bench/profile_scan.py; arguments are passed through). Report in $OUT.
# PROFILE_SCRIPT / KERNELS pick another script and kernel filter, e.g. the SSD scan:
#   PROFILE_SCRIPT=bench/profile_ssd.py KERNELS=regex:chunk_ scripts/gpu-profile.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export Torch_DIR="$(python3 -c 'import torch, os; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))')"
BUILD="${BUILD:-build-gpu}"
if [ -d .debs ]; then
  mkdir -p /tmp/debroot
  for f in .debs/*.deb; do dpkg -x "$f" /tmp/debroot; done
  export CMAKE_PREFIX_PATH="/tmp/debroot/usr:${CMAKE_PREFIX_PATH:-}" CPATH="/tmp/debroot/usr/include:${CPATH:-}"
fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$Torch_DIR" -DSSMLAB_CUDA=AUTO >/dev/null
cmake --build "$BUILD" -j 16 --target ssmlab_ops >/dev/null
out="${OUT:-/tmp}"
ncu --clock-control none -k "${KERNELS:-regex:scan_}" -c "${COUNT:-2}" --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section LaunchStats --section MemoryWorkloadAnalysis \
    python3 "${PROFILE_SCRIPT:-bench/profile_scan.py}" "$BUILD/src/libssmlab_ops.so" "$@" > "$out/ncu.txt" 2>&1 || true
grep -E "scan_|chunk_|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Stall|Issued Ipc|Warp Cycles Per Issued|Block Limit|Executed Ipc|L1/TEX Hit|Pipe" "$out/ncu.txt" | head -120

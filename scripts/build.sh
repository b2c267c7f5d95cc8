#!/usr/bin/env bash
# Configure (once) and build ssmlab. BUILD (folder), JOBS, CMAKE_BUILD_TYPE and SSMLAB_CMAKE_ARGS are honoured.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/env.sh"
BUILD="${BUILD:-build}"
JOBS="${JOBS:-$(nproc)}"
torch_dir="$(ssmlab_torch_dir)"
if [ -z "$torch_dir" ]; then
  echo "[build] LibTorch not found: run scripts/setup.sh (or set Torch_DIR to your LibTorch's share/cmake/Torch)" >&2
  exit 1
fi
cd "$root"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S . -B "$BUILD" "${gen[@]+"${gen[@]}"}" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" \
        -DTorch_DIR="$torch_dir" ${SSMLAB_CMAKE_ARGS:-}
fi
cmake --build "$BUILD" -j "$JOBS"

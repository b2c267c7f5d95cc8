# Sourced by scripts/gpu-check.sh and scripts/gpu-lab.sh on the GPU machine: unpacks the Debian header packages
# carried in .debs/ (scripts/gpu-check.sh --fetch-debs) into /tmp/debroot and points the compiler, linker and loader
# there, then finds the machine's own PyTorch for CMake (Torch_DIR).
if [ -d .debs ]; then
  mkdir -p /tmp/debroot
  for f in .debs/*.deb; do dpkg -x "$f" /tmp/debroot; done
  export CMAKE_PREFIX_PATH="/tmp/debroot/usr:${CMAKE_PREFIX_PATH:-}"
  export CPATH="/tmp/debroot/usr/include:${CPATH:-}"
  export LIBRARY_PATH="/tmp/debroot/usr/lib/x86_64-linux-gnu:${LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH="/tmp/debroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
Torch_DIR="$(python3 -c 'import torch, os; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))')"
export Torch_DIR

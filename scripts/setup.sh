#!/usr/bin/env bash
# One-time (idempotent, quick when done) set-up of everything ssmlab needs on Debian 12:
# Debian packages, then LibTorch 2.11.0 from the torch==2.11.0 wheel in a per-user cache venv, made importable
# from Python (torch's Python dependencies and the NVIDIA libraries its import loads).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

say() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages ---------------------------------------------------------------------------
pkgs=(build-essential cmake ninja-build git python3 python3-venv python3-pip ccache
      libgtest-dev libgmock-dev libbenchmark-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
      gnuplot-nox libsqlite3-dev zlib1g-dev dataset-fashion-mnist python3-pil libssl-dev
      libicu-dev linux-doc-6.1
      slurmctld slurmd slurm-client munge  # a private single-node Slurm for the sweep --slurm test (scripts/slurm-local.sh)
      libgloo-dev  # Gloo's headers only, to declare c10d::ProcessGroupGloo (its code is in libtorch_cpu; train/distributed.cpp)
      chromium)  # headless, for the report's browser check (tests/report/test_browser.cpp)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3 from another installer (pyenv, conda) is fine as long as it can make a venv.
if [ ${#missing[@]} -gt 0 ]; then
  filtered=()
  for p in "${missing[@]}"; do
    case "$p" in
      python3|python3-venv|python3-pip) python3 -c 'import venv, ensurepip' 2>/dev/null || filtered+=("$p") ;;
      cmake) command -v cmake >/dev/null || filtered+=("$p") ;;
      *) filtered+=("$p") ;;
    esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- TensorBoard (optional) ----------------------------------------------------------------------
# The ctest tb.readback (tests/train/tb.cmake) reads the event files of a small sweep back with TensorBoard's own
# reader. tensorboard (PyPI) goes into a venv of its own (it needs no torch), linked as .venv-tensorboard; the
# test is registered only where configure finds it. Not fatal: without it the rest of ssmlab works.
# SSMLAB_NO_TENSORBOARD=1 skips this.
tb_version=2.21.0
tb_venv="$SSMLAB_CACHE/venv-tensorboard-$tb_version"
if [ -z "${SSMLAB_NO_TENSORBOARD:-}" ]; then
  if ! "$tb_venv/bin/python" -c "import tensorboard" 2>/dev/null; then
    say "installing tensorboard==$tb_version into $tb_venv (for the ctest tb.readback)"
    mkdir -p "$SSMLAB_CACHE"
    { [ -x "$tb_venv/bin/pip" ] || python3 -m venv "$tb_venv"; } &&
      "$tb_venv/bin/pip" install -q --disable-pip-version-check "tensorboard==$tb_version" ||
      say "warning: tensorboard not installed; the ctest tb.readback will not be registered"
  fi
  if "$tb_venv/bin/python" -c "import tensorboard" 2>/dev/null; then ln -sfn "$tb_venv" "$here/../.venv-tensorboard"; fi
fi

# ---- LibTorch ------------------------------------------------------------------------------------
user_torch="$(ssmlab_user_torch_prefix)"
if [ -n "$user_torch" ]; then
  say "using your LibTorch at $user_torch"
  exit 0
fi
if [ -z "$(ssmlab_torch_dir)" ]; then
  say "installing torch==$SSMLAB_TORCH_VERSION (LibTorch only, no Python deps) into $SSMLAB_VENV"
  mkdir -p "$SSMLAB_CACHE"
  [ -x "$SSMLAB_VENV/bin/pip" ] || python3 -m venv "$SSMLAB_VENV"
  "$SSMLAB_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "torch==$SSMLAB_TORCH_VERSION"
fi
site="$(ssmlab_venv_site)"
pip_install() { "$SSMLAB_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$@"; }

# ---- Python torch ----------------------------------------------------------------------------------
# `import torch` (python/example.py, tests/python) needs the wheel's Python dependencies, pinned here to versions
# that satisfy torch 2.11.0's METADATA Requires-Dist (setuptools<82 comes with the venv). NumPy is optional for
# torch, but without it every `import torch` warns and Tensor.numpy() fails.
py_pins=(filelock==4.3.2 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 jinja2==3.1.6
         markupsafe==3.0.4 fsspec==2026.9.0 numpy==2.3.5)
if ! "$SSMLAB_VENV/bin/python" - "${py_pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
PY
  say "installing torch's Python dependencies: ${py_pins[*]}"
  pip_install "${py_pins[@]}"
fi

# The NVIDIA libraries are loaded when torch is (libtorch_python.so -> libtorch_cuda.so and its DT_NEEDED list),
# even on a machine without a GPU. A CUDA 13 toolkit on the loader path may provide some; take each one still
# missing from its pip package at the version torch 2.11.0 pins (cuda-toolkit[...]==13.0.2 and the nvidia-*-cu13
# pins of its METADATA). Only what `import torch` loads: cusolver, nvrtc and triton are loaded lazily or not at
# all on CPU, so they are not installed.
nvidia_wheel() {
  case "$1" in
    libcudart.so.*) echo nvidia-cuda-runtime==13.0.96 ;;
    libcupti.so.*) echo nvidia-cuda-cupti==13.0.85 ;;
    libcublas.so.*|libcublasLt.so.*) echo nvidia-cublas==13.1.0.3 ;;
    libcufft.so.*) echo nvidia-cufft==12.0.0.61 ;;
    libcurand.so.*) echo nvidia-curand==10.4.0.35 ;;
    libcusparse.so.*) echo nvidia-cusparse==12.6.3.3 ;;
    libnvJitLink.so.*) echo nvidia-nvjitlink==13.0.88 ;;
    libcufile.so.*) echo nvidia-cufile==1.15.1.6 ;;
    libcusparseLt.so.*) echo nvidia-cusparselt-cu13==0.8.0 ;;
    libnccl.so.*) echo nvidia-nccl-cu13==2.28.9 ;;
    libnvshmem_host.so.*) echo nvidia-nvshmem-cu13==3.4.5 ;;
    libcudnn*.so.*) echo nvidia-cudnn-cu13==9.19.0.56 ;;
    *) return 1 ;;
  esac
}
for round in 1 2 3; do  # a library installed here may itself need another (cusparse -> nvJitLink)
  missing_libs=$(ldd "$site/torch/lib/libtorch_python.so" | awk '/not found/ {print $1}' | sort -u)
  [ -z "$missing_libs" ] && break
  wheels=()
  for lib in $missing_libs; do
    w="$(nvidia_wheel "$lib")" || { echo "[setup] torch needs $lib, which no known wheel provides" >&2; exit 1; }
    wheels+=("$w")
  done
  wheels=($(printf '%s\n' "${wheels[@]}" | sort -u))
  say "torch's libraries miss $(echo $missing_libs | tr '\n' ' '); installing ${wheels[*]}"
  pip_install "${wheels[@]}"
done
if ldd "$site/torch/lib/libtorch_python.so" | grep -q "not found"; then
  echo "[setup] torch's libraries still miss: $(ldd "$site/torch/lib/libtorch_python.so" | grep 'not found')" >&2
  exit 1
fi
"$SSMLAB_VENV/bin/python" -c "import torch" || { echo "[setup] python cannot import torch from $SSMLAB_VENV" >&2; exit 1; }
ln -sfn "$SSMLAB_VENV" "$here/../.venv"
say "LibTorch ready: $(ssmlab_torch_dir); Python torch: .venv/bin/python"

#!/usr/bin/env bash
# One-time (idempotent, quick when done) set-up of everything ssmlab needs on Debian 12:
# Debian packages, then LibTorch 2.11.0 from the torch==2.11.0 wheel in a per-user cache venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

say() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages ---------------------------------------------------------------------------
pkgs=(build-essential cmake ninja-build git python3 python3-venv python3-pip ccache
      libgtest-dev libgmock-dev libbenchmark-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
      gnuplot-nox libsqlite3-dev zlib1g-dev dataset-fashion-mnist python3-pil libssl-dev
      libicu-dev linux-doc-6.1
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
# The wheel's libtorch_cpu.so needs libcudart.so.13 and libcupti.so.13 even on a CPU machine. A CUDA 13
# toolkit provides them; otherwise take just those two from the matching pip packages (small).
if ldd "$site/torch/lib/libtorch_cpu.so" | grep -q "not found"; then
  say "libtorch_cpu.so misses CUDA runtime libraries; installing cudart and cupti wheels"
  "$SSMLAB_VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85"
fi
ln -sfn "$SSMLAB_VENV" "$here/../.venv"
say "LibTorch ready: $(ssmlab_torch_dir)"

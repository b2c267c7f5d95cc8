# Shared by setup.sh, build.sh and gpu-check.sh: where LibTorch lives.
# A user's own LibTorch (Torch_DIR, or a CMAKE_PREFIX_PATH that holds TorchConfig.cmake) wins;
# otherwise the torch==2.11.0 wheel in a per-user cache venv that every clone finds again.
SSMLAB_TORCH_VERSION=2.11.0
SSMLAB_CACHE="${SSMLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ssmlab}"
SSMLAB_VENV="$SSMLAB_CACHE/venv-torch-$SSMLAB_TORCH_VERSION"

# Prints the folder that holds TorchConfig.cmake's parent tree (a CMAKE_PREFIX_PATH entry), or nothing.
ssmlab_user_torch_prefix() {
  if [ -n "${Torch_DIR:-}" ] && [ -f "$Torch_DIR/TorchConfig.cmake" ]; then
    echo "$Torch_DIR"; return
  fi
  local IFS=':;'
  for p in ${CMAKE_PREFIX_PATH:-}; do
    for c in "$p/share/cmake/Torch" "$p/Torch" "$p"; do
      if [ -f "$c/TorchConfig.cmake" ]; then echo "$c"; return; fi
    done
  done
}

ssmlab_venv_site() {
  ls -d "$SSMLAB_VENV"/lib/python3*/site-packages 2>/dev/null | head -n 1
}

ssmlab_torch_dir() {
  local u; u="$(ssmlab_user_torch_prefix)"
  if [ -n "$u" ]; then echo "$u"; return; fi
  local s; s="$(ssmlab_venv_site)"
  [ -n "$s" ] && [ -f "$s/torch/share/cmake/Torch/TorchConfig.cmake" ] && echo "$s/torch/share/cmake/Torch"
}

#!/usr/bin/env bash
# Writes CIFAR-10's official binary batches (data_batch_1..5.bin, test_batch.bin, batches.meta.txt) into
# .data/cifar10 of this checkout, where configs/seqimage/cifar10-*.toml read them, from the JPEG archives of
# the shared data folder (shared/data/cifar10: its to_binary.py, about 7 s; needs Pillow, Debian's python3-pil).
# Usage: scripts/cifar10-binary.sh /path/to/shared/data/cifar10 [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ] || [ ! -f "$1/to_binary.py" ]; then
  echo "usage: $0 SHARED_CIFAR10_FOLDER [OUT_DIR]   (the folder holding to_binary.py and the JPEG archives)" >&2
  exit 2
fi
out="${2:-$here/../.data/cifar10}"
# Debian's python3-pil serves /usr/bin/python3, which need not be the python3 first on PATH (pyenv, conda).
py=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import PIL' 2>/dev/null; then py="$cand"; break; fi
done
[ -n "$py" ] || { echo "[cifar10] needs Pillow: apt-get install python3-pil (or pip install Pillow)" >&2; exit 1; }
"$py" "$1/to_binary.py" "$out"
echo "[cifar10] binary batches in $(cd "$out" && pwd)"

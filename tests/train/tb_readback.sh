#!/bin/sh
# The ctest tb.readback (tests/train/tb.cmake): runs TbReadBack.* with SSMLAB_TB_PYTHON=PYTHON and fails unless
# the test ran to its end with TensorBoard's reader (its closing NOTE), so a filter that matches nothing or a
# read-back left out cannot pass.
#   sh tests/train/tb_readback.sh build/tests/ssmlab_tests /path/to/python
if [ $# -ne 2 ]; then
  echo "usage: tb_readback.sh SSMLAB_TESTS PYTHON" >&2
  exit 2
fi
SSMLAB_TB_PYTHON="$2"
export SSMLAB_TB_PYTHON
out="$("$1" --gtest_filter='TbReadBack.*' 2>&1)"
rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] || exit "$rc"
if ! printf '%s\n' "$out" | grep -q '^\[  NOTE    \] TensorBoard read-back checked'; then
  echo "tb.readback: TbReadBack.* passed without reading the files back with TensorBoard" >&2
  exit 1
fi

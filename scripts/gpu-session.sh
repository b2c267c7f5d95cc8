#!/usr/bin/env bash
# One lent-GPU call made of phases (kernel work of issues 14 / 23): every phase writes its whole output to
# $OUT/<phase>.log (the device reply keeps only the last 12,000 characters) and prints a short summary.
#   PHASES="build tests dr" bash scripts/gpu-session.sh          # first call (~4-6 min on a fresh H100)
#   PHASES="peers" SECTIONS="ss decode gdn m3" bash scripts/gpu-session.sh   # next call, machine still warm
# Phases:
#   build   cmake + ninja -j16 of TARGETS (default ssmlab_ops ssmlab_tests ssmlab_cli) in $BUILD (build-peers,
#           the folder the peers kit reuses); Debian headers from .debs/ (scripts/gpu-check.sh --fetch-debs)
#   tests   ssmlab_tests --gtest_filter=$FILTER (default: every CUDA suite) within TESTS_S seconds
#   dr      bench/gpu_delta_rule.py and bench/gpu_mamba3.py (DR_MODES / M3_MODES: their modes) within DR_S each
#   gen     ssmlab generate eager / --cuda-graph / CPU on a random Mamba-2 (D 256 x 4) HF folder
#   peers   the peers kit (.peers/, carried): SECTIONS, PEERS_BUDGET (default 300), E2E (default 0)
#   segv    LD_PRELOAD SIGSEGV backtrace of `$SEGV_CMD` (a crash that Python's faulthandler shows without C++ frames)
# Carry [".debs", ".peers"] with the call.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
OUT="${OUT:-/tmp/gpu-session-out}"
mkdir -p "$OUT"
PHASES="${PHASES:-build tests dr}"
BUILD="${BUILD:-build-peers}"
source "$root/scripts/gpu-env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T0=$(date +%s)
el() { echo "[t+$(($(date +%s) - T0))s] $*"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
status=0
if has build; then
  el build
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$Torch_DIR" -DSSMLAB_CUDA=ON \
    > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  # shellcheck disable=SC2086
  cmake --build "$BUILD" -j 16 --target ${TARGETS:-ssmlab_ops ssmlab_tests ssmlab_cli} > "$OUT/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }
  el built
fi
if has tests; then
  el tests
  timeout "${TESTS_S:-300}" "$BUILD/tests/ssmlab_tests" --gtest_filter="${FILTER:-*Cuda*:*CUDA*}" --gtest_brief=1 \
    > "$OUT/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED) |^\[==========\]|Failure$|  Actual:" "$OUT/tests.log" | cut -c1-400 | head -40
fi
if has dr; then
  for s in bench/gpu_delta_rule.py bench/gpu_mamba3.py; do
    el "$s"
    log="$OUT/$(basename "$s" .py).log"
    DR_MODES="${DR_MODES:-kernels simt}" M3_MODES="${M3_MODES:-kernels aten_phase}" \
      timeout "${DR_S:-150}" python3 "$s" "$BUILD/src/libssmlab_ops.so" > "$log" 2>&1 || status=1
    grep -E "^\| |FAIL|Error|Fatal" "$log" | head -30
  done
fi
if has gen; then
  el gen
  m=/tmp/gpu-session-hf-m2
  python3 scripts/hf_generate_speed.py "$m" mamba2 --d-model 256 --layers 4 --vocab 1024 --prompt 16 --new 256 \
    --device cuda > "$OUT/gen.log" 2>&1 || status=1
  p=$(seq -s, 1 16)
  for mode in "--device cuda" "--device cuda --cuda-graph" "--device cpu"; do
    # shellcheck disable=SC2086
    "$BUILD/ssmlab" generate "$m" --prompt-ids "$p" --max-new-tokens 256 --greedy $mode 2>&1 >/dev/null |
      tail -1 | sed "s/^/[$mode] /" | tee -a "$OUT/gen.log"
  done
fi
if has peers; then
  el peers
  PEERS_BUDGET="${PEERS_BUDGET:-300}" SECTIONS="${SECTIONS:-gdn m3}" E2E="${E2E:-0}" BUILD="$BUILD" \
    bash .peers/run.sh > "$OUT/peers.log" 2>&1 || status=1
  sed -n '/^=====/,$p' "$OUT/peers.log" | grep -vE "^    |layout|GPU time|^  err" | head -80
fi
if has segv; then
  el segv
  cat > /tmp/gpu-session-segv.c <<'CEOF'
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
static char alt[1 << 16];
static void on_segv(int sig) {
  void* frames[64];
  int n = backtrace(frames, 64);
  static const char m[] = "\n=== native backtrace ===\n";
  if (write(2, m, sizeof m - 1) < 0) {}
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}
__attribute__((constructor)) static void install(void) {
  stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt, .ss_flags = 0};
  sigaltstack(&ss, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_segv;
  sa.sa_flags = SA_ONSTACK;
  sigaction(SIGSEGV, &sa, 0);
}
CEOF
  gcc -shared -fPIC -O1 -o /tmp/gpu-session-segv.so /tmp/gpu-session-segv.c
  # Python's faulthandler would replace the handler: the command must not enable it.
  LD_PRELOAD=/tmp/gpu-session-segv.so timeout 120 bash -c "${SEGV_CMD:?set SEGV_CMD}" > "$OUT/segv.log" 2>&1
  c++filt < "$OUT/segv.log" | grep -A25 "native backtrace" | cut -c1-300 | head -40
fi
el end
exit $status

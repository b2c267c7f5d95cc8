#!/usr/bin/env bash
# Issue 18 on the GPU machine (carry [".debs", ".gpudata"]; .gpudata holds linux-doc.tar.gz from
# /usr/share/doc/linux-doc-6.1/html/_sources and ../shared/data/gpt2-bpe). Trains or resumes configs/collapse/forget.toml
# for BUDGET seconds, PG runs per GPU (4 fit an 80 GB H100; 6 ran out of memory), then packs the light run folders into
# $OUT. Runs resume on the next call while the machine stays warm (checkpoints are too large to bring back).
set -uo pipefail
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
source scripts/gpu-env.sh
BUDGET=${BUDGET:-545}; PG=${PG:-4}
t0=$(date +%s); el() { echo "[t+$(( $(date +%s) - t0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -d .data/linux-doc ] || { mkdir -p .data && tar xzf .gpudata/linux-doc.tar.gz -C .data; }
if [ ! -x build-gpu/ssmlab ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$Torch_DIR" -DSSMLAB_CUDA=AUTO > $OUT/cmake.log 2>&1 || { tail -30 $OUT/cmake.log; exit 1; }
  cmake --build build-gpu -j 16 --target ssmlab_cli 2>&1 | tail -2
fi
el "cli ready"; T=$(( BUDGET - ($(date +%s) - t0) )); echo "sweep for $T s"
TXT="--set task.text.path=.data/linux-doc --set task.text.bpe_encoder=.gpudata/gpt2-bpe/encoder.json --set task.text.bpe_merges=.gpudata/gpt2-bpe/vocab.bpe --set train.threads=2"
(while true; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> $OUT/smi.log; sleep 20; done) &
SMI=$!
timeout --signal=INT --kill-after=40 $T build-gpu/ssmlab sweep configs/collapse/forget.toml --gpus 0 --per-gpu $PG $TXT > $OUT/sweep.log 2>&1
echo "sweep rc $?"; kill $SMI
el "sweep stopped"
tail -c 1500 $OUT/sweep.log
for d in runs/collapse-forget/collapse-forget-*/; do
  echo "$(basename $d) $(ls $d | tr '\n' ' ' | head -c 200)"; grep -o "tok/s[^|]*\|[0-9.]*K tok/s" $d/train.log 2>/dev/null | tail -1
  tail -2 $d/train.log 2>/dev/null | cut -c1-220
done
cat $OUT/smi.log | tail -5
tar czf $OUT/runs-light.tar.gz --exclude=checkpoints runs/collapse-forget
ls -la $OUT; el done

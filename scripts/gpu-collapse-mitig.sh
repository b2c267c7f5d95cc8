#!/usr/bin/env bash
# Issue 18 on the GPU machine, after scripts/gpu-collapse-forget.sh (same warm machine): loss vs position to ML tokens
# (default 2^20) with the training-free mitigations on chosen forget-sweep runs (RUNS="id id ..."), text and newlines
# prompts; packs everything light into $OUT.
set -uo pipefail
source scripts/gpu-env.sh
ML=${ML:-1048576}; t0=$(date +%s); el() { echo "[t+$(( $(date +%s) - t0 ))s] $*"; }
for r in $RUNS; do
  d=$(ls -d runs/collapse-forget/*$r* | head -1); b=$(basename $d)
  T=$(grep -o '"t_train": *[0-9]*' $d/analysis/loss_position.json | head -1 | grep -o '[0-9]*$')
  for p in text newlines; do
    timeout ${TL:-200} build-gpu/ssmlab analyze loss_position $d --out runs/collapse-mitig/$b-$p \
      --set analysis.loss_position.max_len=$ML --set analysis.loss_position.prompt=$p \
      --set analysis.loss_position.variants=none,rri,state_norm,window --set analysis.loss_position.samples=${S:-2} \
      --set analysis.loss_position.bucket=$(( T / 2 )) --set analysis.loss_position.logx=true \
      --set analysis.loss_position.segment=2048 > $OUT/mitig-$b-$p.log 2>&1; echo "$b $p rc $?"; tail -3 $OUT/mitig-$b-$p.log
    el "$b $p"
  done
done
tar czf $OUT/runs-light.tar.gz --exclude=checkpoints runs/collapse-forget runs/collapse-mitig
ls -la $OUT

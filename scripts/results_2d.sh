#!/usr/bin/env bash
# Imagine Flash results on the 2-D sets (docs/results.md): teacher DDIM baselines, students at
# 1/2/3 steps with the defaults, and the ablations, each scored by `flashctl eval --json`.
# Usage: scripts/results_2d.sh FLASHCTL OUTDIR [DATASET...]. A teacher in OUTDIR/<dataset>_teacher
# is trained first when missing. Each run's JSON lands in OUTDIR/json/; finished runs are skipped.
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}; shift 2
DATASETS=${*:-checkerboard gaussian-mixture}
mkdir -p "$OUT/json"
for ds in $DATASETS; do
  T="$OUT/${ds}_teacher"
  [ -f "$T/model.safetensors" ] || "$FL" teacher train --dataset "$ds" --preset small --out "$T"
  ev() { # name model [eval args]
    local name=$1 model=$2; shift 2
    [ -s "$OUT/json/$name.json" ] || "$FL" eval --model "$model" --dataset "$ds" --count 2000 --seed 7 --json "$@" > "$OUT/json/$name.json"
  }
  run() { # name steps [distill args]
    local name=$1 k=$2; shift 2
    local S="$OUT/$ds.$name.k$k"
    [ -f "$S/model.safetensors" ] || "$FL" distill --teacher "$T" --steps $k --out "$S" "$@" > /dev/null
    ev "$ds.$name.k$k" "$S" --teacher "$T"
  }
  for n in 50 10 4 2 1; do ev "$ds.teacher.ddim$n" "$T" --steps $n; done
  for k in 1 2 3; do run default $k; done
  # one step (default: trajectory loss, 32 teacher steps)
  run forward 1 --inputs forward
  run nc_off 1 --noise-correction off
  run trajectory8 1 --teacher-steps 8
  for tau in scale:0.25 scale:0.5 offset:750 identity power:2; do run "srl_tau_${tau/:/_}" 1 --loss srl --tau $tau; done
  run srl_fresh 1 --loss srl --tau scale:0.25 --srl-noise fresh
  # three steps (default: srl, implied noise, tau power:2)
  run forward 3 --inputs forward
  run nc_off 3 --noise-correction off
  run srl_fresh 3 --srl-noise fresh
  run trajectory 3 --loss trajectory
  for tau in scale:0.25 scale:0.5 offset:750 identity const:250; do run "srl_tau_${tau/:/_}" 3 --tau $tau; done
done

#!/usr/bin/env bash
# Imagine Flash results on the 2-D sets (docs/results.md): teacher DDIM baselines, students at
# 1/2/3 steps and the ablations, each evaluated with `flashctl eval --json`.
# Usage: scripts/results_2d.sh FLASHCTL OUTDIR [DATASET...]; teachers in OUTDIR/<dataset>_teacher
# are trained first when missing. Every run's JSON lands in OUTDIR/json/.
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}; shift 2
DATASETS=${*:-checkerboard gaussian-mixture}
mkdir -p "$OUT/json"
ev() { # name model [extra eval args]
  local name=$1 model=$2; shift 2
  [ -s "$OUT/json/$name.json" ] || "$FL" eval --model "$model" --dataset "$ds" --samples 2000 --seed 7 --json "$@" > "$OUT/json/$name.json"
}
for ds in $DATASETS; do
  T="$OUT/${ds}_teacher"
  [ -f "$T/model.safetensors" ] || "$FL" teacher train --dataset "$ds" --preset small --out "$T"
  for n in 50 10 4 2 1; do ev "$ds.teacher.ddim$n" "$T" --steps $n; done
  run() { # name steps [distill args]
    local name=$1 k=$2; shift 2
    local S="$OUT/$ds.$name.k$k"
    [ -f "$S/model.safetensors" ] || "$FL" distill --teacher "$T" --steps $k --out "$S" "$@" > /dev/null
    ev "$ds.$name.k$k" "$S" --teacher "$T"
  }
  for k in 1 2 3; do run default $k; done
  for k in 1 3; do
    run forward $k --inputs forward
    run trajectory $k --loss trajectory
    run nc_off $k --noise-correction off
    run srl_fresh $k --srl-noise fresh
    for tau in identity power:2 scale:0.25 scale:0.5 offset:750; do run "tau_${tau/:/_}" $k --tau $tau; done
  done
done

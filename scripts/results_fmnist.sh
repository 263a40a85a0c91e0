#!/usr/bin/env bash
# Fashion-MNIST rows of docs/results.md: teacher DDIM baselines and Imagine Flash students at
# 1/2/3 steps (CLI defaults: trajectory target at 1 step, segment target at 2+), forward inputs
# and the one-call SRL at 3 steps for comparison, scored with FD-FMNIST (fixtures/featurenet),
# precision and recall on N samples against N test images (eval seed 7).
# Usage: scripts/results_fmnist.sh FLASHCTL OUTDIR TEACHER_DIR [SAMPLES] [STUDENT_ITERS]
# Finished runs are skipped, so an interrupted run continues where it stopped.
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}; T=${3:?teacher dir}; N=${4:-256}; IT=${5:-100}
mkdir -p "$OUT/json"
ev() { local name=$1 model=$2; shift 2
  [ -s "$OUT/json/$name.json" ] || "$FL" eval --model "$model" --dataset fashion-mnist --count "$N" --seed 7 --json "$@" > "$OUT/json/$name.json"; }
for n in 1 2 4 10 50; do ev "fashion-mnist.teacher.ddim$n" "$T" --steps $n; done
run() { local name=$1 k=$2; shift 2; local S="$OUT/fashion-mnist.$name.k$k"
  [ -f "$S/model.safetensors" ] || "$FL" distill --teacher "$T" --steps $k --iters "$IT" --batch 16 --seed 5 --out "$S" --force "$@" > /dev/null
  ev "fashion-mnist.$name.k$k" "$S" --teacher "$T" --teacher-steps 50; }
for k in 3 2 1; do run default "$k"; done
run forward 3 --inputs forward
run srl1 3 --loss srl --teacher-steps 1

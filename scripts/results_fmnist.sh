#!/usr/bin/env bash
# Fashion-MNIST rows of docs/results.md at a CPU budget: teacher DDIM baselines and Imagine Flash
# students, scored with FD-FMNIST (fixtures/featurenet) on N test images.
# Usage: scripts/results_fmnist.sh FLASHCTL OUTDIR TEACHER_DIR [SAMPLES] [STUDENT_ITERS]
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}; T=${3:?teacher dir}; N=${4:-256}; IT=${5:-100}
mkdir -p "$OUT/json"
ev() { local name=$1 model=$2; shift 2
  [ -s "$OUT/json/$name.json" ] || "$FL" eval --model "$model" --dataset fashion-mnist --count "$N" --seed 7 --json "$@" > "$OUT/json/$name.json"; }
for n in 1 2 4 10 50; do ev "fashion-mnist.teacher.ddim$n" "$T" --steps $n; done
run() { local name=$1 k=$2; shift 2; local S="$OUT/fashion-mnist.$name.k$k"
  [ -f "$S/model.safetensors" ] || "$FL" distill --teacher "$T" --steps $k --iters "$IT" --out "$S" "$@" > /dev/null
  ev "fashion-mnist.$name.k$k" "$S" --teacher "$T" --teacher-steps 10; }
# one teacher call per iteration at every step count (a 32-step trajectory target costs 32)
run srl 1 --loss srl --tau scale:0.25
run default 3
run srl 2 --loss srl

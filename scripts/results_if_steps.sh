#!/usr/bin/env bash
# docs/results.md "Imagine Flash: more steps": a checkerboard teacher (seed 3), students at
# 1-4 steps with each target x inputs x discriminator (seed 5), each scored at 20,000 samples
# (eval seed 11), plus the per-step diagnosis of the 3-step students.
# Usage: scripts/results_if_steps.sh FLASHCTL OUTDIR. Finished runs are skipped.
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}
mkdir -p "$OUT/json"
T="$OUT/cb_teacher"
[ -f "$T/model.safetensors" ] || "$FL" teacher train --dataset checkerboard --seed 3 --out "$T" --force
ev() { # name model [eval args]
  local name=$1 model=$2; shift 2
  [ -s "$OUT/json/$name.json" ] || "$FL" eval --model "$model" --dataset checkerboard --count 20000 --seed 11 --json "$@" > "$OUT/json/$name.json"
}
run() { # name steps [distill args]
  local name=$1 k=$2; shift 2
  local S="$OUT/$name.k$k"
  [ -f "$S/model.safetensors" ] || "$FL" distill --teacher "$T" --steps "$k" --seed 5 --out "$S" --force "$@" > /dev/null
  ev "$name.k$k" "$S"
}
for n in 50 10 4 2 1; do ev "teacher.ddim$n" "$T" --steps $n; done
for k in 1 2 3 4; do run default "$k"; done
run forward 1 --inputs forward
run adversarial 1 --adversarial
for k in 2 3; do
  run segment_forward "$k" --loss segment --inputs forward
  run srl1 "$k" --loss srl --teacher-steps 1
done
run srl1_forward 3 --loss srl --teacher-steps 1 --inputs forward
run srl_published 3 --loss srl
run trajectory 3 --loss trajectory
run adversarial 3 --adversarial
run adversarial_w001 3 --adversarial --adversarial-weight 0.001
for name in default srl1 trajectory srl_published; do
  "$FL" eval --model "$OUT/$name.k3" --dataset checkerboard --count 2000 --seed 11 --teacher "$T" --per-step
done

#!/usr/bin/env bash
# KDM rows of docs/results.md: offline pairs from the same teachers as the Imagine Flash table,
# then one-step KDM generators (dense / eigen Koopman, adversarial on/off), each scored by
# `flashctl eval --json` with the same settings as scripts/results_2d.sh / results_fmnist.sh.
# Usage: scripts/results_kdm.sh FLASHCTL OUTDIR 2d|fmnist TEACHER_DIR [DATASET] [PAIRS] [ITERS]
set -euo pipefail
FL=${1:?flashctl binary}; OUT=${2:?output dir}; KIND=${3:?2d or fmnist}; T=${4:?teacher dir}
mkdir -p "$OUT/json"
if [ "$KIND" = 2d ]; then
  DS=${5:?dataset}; N=${6:-50000}; IT=${7:-2000}; EV=(--count 2000 --seed 7)
  M=50; SHARD=1024; PRESET=small
else # CPU budget: 10 teacher steps (the teacher's best DDIM), tiny UNets (docs/results.md)
  DS=fashion-mnist; N=${6:-512}; IT=${7:-300}; EV=(--count 256 --seed 7)
  M=10; SHARD=128; PRESET=tiny
fi
P="$OUT/$DS.pairs$M"
"$FL" pairs generate --teacher "$T" --count "$N" --steps $M --shard-size $SHARD --out "$P" > /dev/null
run() { local name=$1; shift; local S="$OUT/$DS.$name.k1"
  [ -f "$S/model.safetensors" ] || "$FL" distill --method kdm --pairs "$P" --iters "$IT" --preset $PRESET --out "$S" "$@" > /dev/null
  [ -s "$OUT/json/$DS.$name.k1.json" ] || "$FL" eval --model "$S" --dataset "$DS" "${EV[@]}" --json > "$OUT/json/$DS.$name.k1.json"; }
run kdm_dense --koopman dense
[ "$KIND" = 2d ] || exit 0   # Fashion-MNIST: only the dense row fitted the CPU budget
run kdm_eigen --koopman eigen
run kdm_dense_adv --koopman dense --adversarial
run kdm_eigen_adv --koopman eigen --adversarial

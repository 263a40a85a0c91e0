#!/usr/bin/env bash
# The runs behind docs/results.md "Bundles and bench": a 2-D MLP (checkerboard, small preset) and
# a Fashion-MNIST UNet (small preset) teacher, 3-step Imagine Flash students, then `flashctl
# bench` on tract and ORT CPU. Latency depends on the architecture only, so the Fashion-MNIST
# teacher/student are trained for a few iterations. Usage: scripts/results_bench.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
B=target/release/flashctl
R=${1:-runs/bench}
ORT_DYLIB_PATH="$(scripts/setup.sh)"
export ORT_DYLIB_PATH
$B teacher train --dataset checkerboard --preset small --iters 300 --out "$R/cb_teacher" --force
$B distill --teacher "$R/cb_teacher" --steps 3 --iters 50 --out "$R/cb_if3" --force
$B teacher train --dataset fashion-mnist --preset small --iters 3 --out "$R/fm_teacher" --force
$B distill --teacher "$R/fm_teacher" --steps 3 --iters 2 --out "$R/fm_if3" --force
for rt in tract ort-cpu; do
    $B bench --model "$R/cb_if3" --teacher "$R/cb_teacher" --teacher-steps 50 --runtime $rt \
        --batch 1,8,64 --runs 30 --warmup 5 --out "$R/bench_cb_$rt"
    $B bench --model "$R/fm_if3" --teacher "$R/fm_teacher" --teacher-steps 50 --runtime $rt \
        --batch 1,8 --runs 7 --warmup 2 --out "$R/bench_fm_$rt"
done
for t in tract ort-cpu; do
    $B build --model "$R/fm_if3" --target $t --out "$R/bundle_fm_$t"
    $B bundle verify "$R/bundle_fm_$t"
done

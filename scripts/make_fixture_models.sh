#!/usr/bin/env bash
# Rebuild the tiny models under fixtures/models (the parity matrix and the goldens use them).
# They are committed so goldens stay fixed; rerun only when the model format changes, then
# regenerate the goldens: FLASHCTL_UPDATE_GOLDENS=1 cargo test --release --test parity_matrix
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
B=target/release/flashctl
S=$(mktemp -d)
trap 'rm -rf "$S"' EXIT
$B teacher train --dataset checkerboard --preset tiny --iters 200 --seed 0 --out "$S/mlp_teacher"
$B distill --teacher "$S/mlp_teacher" --steps 2 --iters 50 --seed 0 --out "$S/mlp_if2"
$B pairs generate --teacher "$S/mlp_teacher" --count 256 --steps 10 --seed 0 --out "$S/pairs"
$B distill --method kdm --pairs "$S/pairs" --koopman eigen --iters 50 --seed 0 \
    --preset tiny --out "$S/mlp_kdm"
for m in mlp_teacher mlp_if2 mlp_kdm; do
    mkdir -p "fixtures/models/$m"
    cp "$S/$m/config.json" "$S/$m/model.safetensors" "fixtures/models/$m/"
done
echo "fixtures/models rebuilt"

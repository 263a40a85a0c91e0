#!/usr/bin/env bash
# The gemm crate with and without its AVX-512 kernels (feature x86-v4) on the conv-as-GEMM
# shapes of the Fashion-MNIST small UNet, both builds in one run (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")"
CARGO_TARGET_DIR=target/avx2 cargo build --release --quiet
CARGO_TARGET_DIR=target/v4 cargo build --release --quiet --features v4
for round in 1 2; do
  for v in avx2 v4; do echo "== $v (round $round)"; "target/$v/release/gemmab"; done
done

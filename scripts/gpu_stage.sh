#!/usr/bin/env bash
# Build the CUDA flashctl HERE (no GPU needed) and stage everything a GPU-machine run needs into
# .device/ (git-ignored), cut into parcels that each fit one device call. docs/gpu.md.
#
#   scripts/gpu_stage.sh            # -> .device/p1, .device/p2, ... and the calls to make
#
# Staged (once; reused when present): the stripped CUDA binary (features cuda + ort-cuda), xz;
# ONNX Runtime 1.31.1 with its CUDA provider cut to sm_90 (../shared/gpu/stage-ort-cuda.sh);
# candle's PTX cache for driver 580; the Fashion-MNIST IDX files; the diffusers wheel for the
# PyTorch peer (the GPU machine has torch but not diffusers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${FLASHCTL_SHARED:-$ROOT/../shared}/gpu
STAGE=$ROOT/.device
BUILD=$STAGE/build
PARCEL_MIB=${PARCEL_MIB:-54}   # + the ~6 MiB working tree stays under a call's 64 MiB
DIFFUSERS=${DIFFUSERS_VERSION:-0.42.1}
FMNIST=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p "$BUILD"

echo "== 1. CUDA build of flashctl (target-cuda/, about 12 min from cold on 2 cores)"
eval "$("$SHARED/setup-cuda-build-env.sh")"
CARGO_TARGET_DIR=$ROOT/target-cuda cargo build --release --features cuda,ort-cuda --bin flashctl
BIN=$ROOT/target-cuda/release/flashctl
if [ ! -f "$BUILD/flashctl.xz" ] || [ "$BIN" -nt "$BUILD/flashctl.xz" ]; then
  strip -o "$BUILD/flashctl" "$BIN"
  xz -T2 -9 -f "$BUILD/flashctl"
fi

echo "== 2. ONNX Runtime + CUDA provider (sm_90)"
if [ ! -f "$BUILD/ort/c2/unpack.sh" ]; then
  rm -rf "$BUILD/ort"
  "$SHARED/stage-ort-cuda.sh" "$BUILD/ort"
fi

echo "== 3. candle PTX cache, Fashion-MNIST, diffusers wheel"
cp "$SHARED"/nvcache-candle-*.tar.xz "$BUILD/nvcache.tar.xz"
mkdir -p "$BUILD/fashion-mnist"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$FMNIST/$f" ] || { echo "missing $FMNIST/$f (install Debian's dataset-fashion-mnist)" >&2; exit 2; }
  cp "$FMNIST/$f" "$BUILD/fashion-mnist/"
done
if ! ls "$BUILD"/wheels/diffusers-"$DIFFUSERS"-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d "$BUILD/wheels" "diffusers==$DIFFUSERS"
fi

echo "== 4. parcels of at most $PARCEL_MIB MiB"
rm -rf "$STAGE"/p[0-9]* "$STAGE/all.tar"
tar -C "$BUILD" -cf "$STAGE/all.tar" flashctl.xz ort nvcache.tar.xz fashion-mnist wheels
SHA=$(sha256sum "$STAGE/all.tar" | awk '{print $1}')
(cd "$STAGE" && split -b "${PARCEL_MIB}M" -d -a 2 all.tar part.)
n=0
for part in "$STAGE"/part.*; do
  n=$((n + 1))
  mkdir -p "$STAGE/p$n"
  mv "$part" "$STAGE/p$n/"
done
echo "$SHA" > "$STAGE/p$n/all.tar.sha256"
echo "$n" > "$STAGE/p$n/parcels"
rm -f "$STAGE/all.tar"
du -sh "$STAGE"/p*
echo
echo "Device calls (each within ~30 s of the last, while the machine stays warm):"
for i in $(seq 1 $((n - 1))); do
  echo "  run carry=[\".device/p$i\"]  command: bash scripts/gpu_device.sh park .device/p$i"
done
echo "  run carry=[\".device/p$n\"]  command: bash scripts/gpu_device.sh run .device/p$n [full|smoke]"

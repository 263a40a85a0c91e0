#!/usr/bin/env bash
# ON THE GPU MACHINE: receive the parcels staged by scripts/gpu_stage.sh and run the job.
#
#   bash scripts/gpu_device.sh park .device/pK           # every parcel but the last
#   bash scripts/gpu_device.sh run  .device/pN [PROFILE]  # the last: unpack, set up, run the job
#
# Parts wait in /tmp/flashctl-gpu, which lives only while the machine stays warm (~30 s after a
# call), so the calls must follow each other at once. PROFILE: full (default) or smoke
# (scripts/gpu_job.sh). Results go to $OUT.
set -euo pipefail
CMD=${1:?usage: gpu_device.sh park|run PARCEL_DIR [PROFILE]}
PARCEL=${2:?usage: gpu_device.sh park|run PARCEL_DIR [PROFILE]}
PROFILE=${3:-full}
W=/tmp/flashctl-gpu
mkdir -p "$W/parts"
cp "$PARCEL"/part.* "$W/parts/"
if [ "$CMD" = park ]; then
  echo "parked $(ls "$W/parts" | wc -l) part(s) in $W/parts"
  exit 0
fi
[ "$CMD" = run ] || { echo "error: unknown command $CMD (park, run)" >&2; exit 2; }
want=$(cat "$PARCEL/parcels")
have=$(ls "$W/parts" | wc -l)
if [ "$have" != "$want" ]; then
  echo "error: $have of $want parts in $W/parts: the machine went cold between calls; send p1.. again" >&2
  exit 9
fi
if [ ! -x "$W/bin/flashctl" ]; then
  cat "$W"/parts/part.* > "$W/all.tar"
  [ "$(sha256sum "$W/all.tar" | awk '{print $1}')" = "$(cat "$PARCEL/all.tar.sha256")" ] \
    || { echo "error: staged parts do not match their checksum" >&2; exit 8; }
  mkdir -p "$W/root" "$W/bin" "$W/nvcache"
  tar -xf "$W/all.tar" -C "$W/root" && rm -f "$W/all.tar"
  xz -dc "$W/root/flashctl.xz" > "$W/bin/flashctl" && chmod +x "$W/bin/flashctl"
  tar -xJf "$W/root/nvcache.tar.xz" -C "$W/nvcache"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$W/site" "$W"/root/wheels/*.whl
  bash "$W/root/ort/c1/unpack.sh"
fi
# ORT + its CUDA provider (sets ORT_DYLIB_PATH, LD_LIBRARY_PATH incl. CUDA 13's libraries)
. "$W/root/ort/c2/unpack.sh"
export CUDA_CACHE_PATH=$W/nvcache/.nv/ComputeCache
export PYTHONPATH=$W/site${PYTHONPATH:+:$PYTHONPATH}
# the job's work folder stays in /tmp while the machine is warm: a second `run` call continues it
# (DEVICE=cpu with the link-time libcuda stub on LD_LIBRARY_PATH rehearses all of this on a
# machine without a GPU: docs/gpu.md)
export FLASHCTL=$W/bin/flashctl FASHION_MNIST_DIR=$W/root/fashion-mnist DEVICE=${DEVICE:-cuda} JOB_WORK=$W/work
exec bash "$(dirname "$0")/gpu_job.sh" "$PROFILE"

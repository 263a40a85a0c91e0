#!/usr/bin/env bash
# Installs what the tests need into .cache/ (idempotent):
#  - pip's onnxruntime==1.31.1 wheel, for libonnxruntime.so (loaded by `ort` through ORT_DYLIB_PATH)
#  - onnx, numpy, safetensors, for the independent Python check of an exported graph
#  - Debian's dataset-fashion-mnist, when apt-get can run (optional: tests use their own IDX files)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.cache/py
if [ ! -f "$PY/onnxruntime/capi/libonnxruntime.so.1.31.1" ] || [ ! -d "$PY/onnx" ]; then
  echo "setup: installing onnxruntime==1.31.1, onnx, numpy, safetensors into $PY" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$PY" \
    onnxruntime==1.31.1 onnx numpy safetensors
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's dataset-fashion-mnist" >&2
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
    echo "setup: dataset-fashion-mnist not installed (optional)" >&2
fi
echo "$PWD/$PY/onnxruntime/capi/libonnxruntime.so.1.31.1"

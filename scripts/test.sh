#!/usr/bin/env bash
# The README's test command: set up, then the whole suite (release mode: the numerics are heavy),
# then an independent check of an exported graph with the onnx checker and onnxruntime's Python API.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_DYLIB_PATH="$(scripts/setup.sh)"
export ORT_DYLIB_PATH
export FLASHCTL_REQUIRE_ORT=1
cargo test --release --workspace
# independent of flashctl's own validate: onnx.checker(full_check) + onnxruntime (Python) parity
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- teacher train --dataset checkerboard --preset tiny --iters 50 --out "$tmp/teacher" >/dev/null
cargo run --release --quiet -- export --model "$tmp/teacher" --steps 4 --out "$tmp/export/model.onnx" >/dev/null
PYTHONPATH=.cache/py python3 scripts/check_export.py "$tmp/export/model.onnx"
# the fp16 export of the same teacher: a valid ONNX model that onnxruntime runs within 1e-2
cargo run --release --quiet -- export --model "$tmp/teacher" --steps 4 --precision fp16 --out "$tmp/export16/model.onnx" >/dev/null
PYTHONPATH=.cache/py python3 scripts/check_export.py "$tmp/export16/model.onnx"
# and a distilled 2-step Imagine Flash student, noise correction in the graph
cargo run --release --quiet -- distill --teacher "$tmp/teacher" --steps 2 --iters 20 --out "$tmp/student" >/dev/null
cargo run --release --quiet -- export --model "$tmp/student" --out "$tmp/student_export/model.onnx" >/dev/null
PYTHONPATH=.cache/py python3 scripts/check_export.py "$tmp/student_export/model.onnx"
# the GPU machine's scripts (docs/gpu.md) cannot run here; they must at least parse
for f in scripts/gpu_*.sh scripts/against_torch_onnx.sh; do bash -n "$f"; done
python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' scripts/torch_peer.py scripts/torch_onnx_export.py scripts/gpu_collect.py scripts/gpu_report.py
echo "scripts/test.sh: all checks passed"

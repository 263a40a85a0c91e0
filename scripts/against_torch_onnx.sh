#!/usr/bin/env bash
# flashctl's graph vs torch.onnx's export of the same UNet2DModel checkpoint, interleaved in one
# run of one runtime (`flashctl bench --against`): the two diffusers fixtures plus two
# configurations flashctl's tests have never seen (random weights, scripts/torch_onnx_export.py).
#   scripts/against_torch_onnx.sh [RUNTIME] [BATCHES] [RUNS] [TARGETS]
#   (default: ort-cpu 1,8 50 generic,ort-cpu; TARGETS: the `export --target` lowerings compared)
# Needs torch, diffusers and onnx from pip (PYTHONPATH may point at --target installs) and, for
# ort-*, ONNX Runtime (scripts/setup.sh prints the library path; ORT_DYLIB_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
runtime="${1:-ort-cpu}"
batches="${2:-1,8}"
runs="${3:-50}"
targets="${4:-generic,ort-cpu}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --release --quiet
bin=target/release/flashctl
models=(fixtures/diffusers/unet_uncond_eps fixtures/diffusers/unet_class_vpred)
for cfg in scale-shift-attn2 class-cond-28; do
  python3 scripts/torch_onnx_export.py --make "$cfg" --model "$tmp/$cfg" \
    --out "$tmp/$cfg.torch.onnx" > /dev/null 2> "$tmp/export.log" || { cat "$tmp/export.log"; exit 1; }
  models+=("$tmp/$cfg")
done
for m in "${models[@]}"; do
  name="$(basename "$m")"
  other="$tmp/$name.torch.onnx"
  [ -f "$other" ] || python3 scripts/torch_onnx_export.py --model "$m" --out "$other" \
    > /dev/null 2> "$tmp/export.log" || { cat "$tmp/export.log"; exit 1; }
  for target in ${targets//,/ }; do
    "$bin" bench --model "$m" --steps 1 --target "$target" --against "$other" \
      --runtime "$runtime" --batch "$batches" --warmup 5 --runs "$runs" --json > "$tmp/$name.json"
    python3 - "$name ($target)" "$tmp/$name.json" <<'PY'
import json, sys
name, r = sys.argv[1], json.load(open(sys.argv[2]))
a = r["against"]
cells = ", ".join(f"batch {b['batch']}: {b['flashctl']['latency_ms']['p50']:.2f} vs "
                  f"{b['other']['latency_ms']['p50']:.2f} ms = {b['ratio']:.3f}x"
                  for b in a["per_batch"])
print(f"{name:<40} nodes {a['flashctl_nodes']} vs {a['nodes']}; max rel diff "
      f"{a['max_rel_diff']:.1e}{'' if a['same_function'] else ' (NOT THE SAME FUNCTION)'}; {cells}")
PY
  done
done

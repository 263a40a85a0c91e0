#!/usr/bin/env bash
# One training step of a model directory's UNet, flashctl (candle) beside PyTorch eager, in the
# same run on the same machine: ms/step, peak RSS and the ratios.
#   scripts/bench_train_peer.sh MODEL_DIR [BATCH] [STEPS]
# PyTorch and diffusers come from pip (PYTHONPATH may point at a --target install); the peer
# trains diffusers' UNet2DModel built from the same config.json (scripts/torch_peer.py).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/bench_train_peer.sh MODEL_DIR [BATCH] [STEPS]}"
batch="${2:-32}"
steps="${3:-10}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --release --quiet
bin=target/release/flashctl
"$bin" bench-train --model "$model" --batch "$batch" --steps "$steps" --json > "$tmp/flashctl.json"
python3 scripts/torch_peer.py --model "$model" --device cpu --train-batch "$batch" \
  --train-steps "$steps" --out "$tmp/torch.json" > /dev/null
python3 - "$tmp/flashctl.json" "$tmp/torch.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
fm, tm = f["p50_ms"], t["train_step"]["p50_ms"]
fr, tr = f["peak_rss_mib"], t["peak_rss_kb"] / 1024
print(f"training step, {f['architecture']} {f['parameters']} parameters, batch {f['batch']}, "
      f"{f['threads']} threads")
print(f"  flashctl (candle)   p50 {fm:8.1f} ms/step   peak RSS {fr:6.0f} MiB")
print(f"  PyTorch {t['torch']:<11} p50 {tm:8.1f} ms/step   peak RSS {tr:6.0f} MiB")
print(f"  ratio flashctl/PyTorch: time {fm / tm:.2f}x, peak RSS {fr / tr:.2f}x")
PY

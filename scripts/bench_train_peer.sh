#!/usr/bin/env bash
# One training step of a model directory's UNet, flashctl (candle) beside PyTorch eager, in the
# same run on the same machine: ms/step, peak RSS and the ratios.
#   scripts/bench_train_peer.sh MODEL_DIR [BATCH] [STEPS] [ROUNDS]
# ROUNDS > 1 alternates the two ROUNDS times (a shared host's speed drifts by more than the
# difference being measured) and ends with the median of the per-round ratios.
# PyTorch and diffusers come from pip (PYTHONPATH may point at a --target install); the peer
# trains diffusers' UNet2DModel built from the same config.json (scripts/torch_peer.py).
# FLASHCTL_BIN=PATH times that binary instead of building this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/bench_train_peer.sh MODEL_DIR [BATCH] [STEPS] [ROUNDS]}"
batch="${2:-32}"
steps="${3:-10}"
rounds="${4:-1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ -n "${FLASHCTL_BIN:-}" ]]; then
  bin="$FLASHCTL_BIN"   # another build, for before/after runs
else
  cargo build --release --quiet
  bin=target/release/flashctl
fi
for round in $(seq 1 "$rounds"); do
  "$bin" bench-train --model "$model" --batch "$batch" --steps "$steps" --json \
    > "$tmp/flashctl.$round.json"
  python3 scripts/torch_peer.py --model "$model" --device cpu --train-batch "$batch" \
    --train-steps "$steps" --out "$tmp/torch.$round.json" > /dev/null
done
python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
ratios = []
for r in range(1, rounds + 1):
    f = json.load(open(f"{tmp}/flashctl.{r}.json"))
    t = json.load(open(f"{tmp}/torch.{r}.json"))
    fm, tm = f["p50_ms"], t["train_step"]["p50_ms"]
    fr, tr = f["peak_rss_mib"], t["peak_rss_kb"] / 1024
    if r == 1:
        print(f"training step, {f['architecture']} {f['parameters']} parameters, "
              f"batch {f['batch']}, {f['threads']} threads")
    if rounds > 1:
        print(f"round {r}")
    print(f"  flashctl (candle)   p50 {fm:8.1f} ms/step   peak RSS {fr:6.0f} MiB")
    print(f"  PyTorch {t['torch']:<11} p50 {tm:8.1f} ms/step   peak RSS {tr:6.0f} MiB")
    print(f"  ratio flashctl/PyTorch: time {fm / tm:.2f}x, peak RSS {fr / tr:.2f}x")
    ratios.append(fm / tm)
if rounds > 1:
    print(f"median time ratio over {rounds} rounds: {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
PY

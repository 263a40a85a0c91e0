#!/usr/bin/env bash
# The measurement job of issue 8, sized to one device call (docs/gpu.md): Fashion-MNIST teacher,
# Imagine Flash 1/2/3-step and KDM students, FD-FMNIST of each, the 3-step student exported and
# validated/benched on ONNX Runtime CUDA (fp32 and fp16), and the PyTorch peer timed in the same
# run. Every stage has a time budget; results are written after each stage, so a run cut short
# still returns what it measured.
#
#   bash scripts/gpu_job.sh full    # on the GPU machine, via scripts/gpu_device.sh
#   bash scripts/gpu_job.sh smoke   # anywhere, on the CPU: the same pipeline in seconds
#
# Env: FLASHCTL (binary), DEVICE (cuda|cpu), FASHION_MNIST_DIR, OUT (results folder),
# PYTHON (with torch + diffusers for the peer; the stage is skipped without them), JOB_WORK (the
# work folder; run again with the same one to continue where a deadline stopped it).
set -uo pipefail
PROFILE=${1:-full}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLASHCTL=${FLASHCTL:-$ROOT/target/release/flashctl}
OUT=${OUT:-$ROOT/runs/gpu_job}
PYTHON=${PYTHON:-python3}
FM=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
W=${JOB_WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$W"
cd "$ROOT"
case "$PROFILE" in
  full)
    DEVICE=${DEVICE:-cuda}; RT=ort-cuda; PRESET=base; TRAIN_BATCH=128
    T_TEACHER=100; T_STUDENT=25; T_KDM=25; PAIRS=2048; PAIR_STEPS=25; KDM_PRESET=small
    EVAL_N=1000; TEACHER_EVAL_STEPS=50; BENCH_BATCH=1,64; RUNS=20; PEER_MODES=eager:fp32,eager:tf32,compile:tf32
    DEADLINE_S=${DEADLINE_S:-530} ;;
  smoke)
    DEVICE=${DEVICE:-cpu}; RT=ort-cpu; PRESET=tiny; TRAIN_BATCH=8
    T_TEACHER=3; T_STUDENT=2; T_KDM=2; PAIRS=32; PAIR_STEPS=4
    KDM_PRESET=tiny; EVAL_N=32; TEACHER_EVAL_STEPS=4; BENCH_BATCH=1,2; RUNS=2; PEER_MODES=eager:fp32,eager:tf32
    DEADLINE_S=${DEADLINE_S:-1200} ;;
  *) echo "error: profile $PROFILE (full, smoke)" >&2; exit 2 ;;
esac
LOG=$OUT/job.log
touch "$W/stages.tsv"   # a rerun with the same JOB_WORK skips the stages that already passed
echo "profile $PROFILE device $DEVICE runtime $RT binary $FLASHCTL" | tee -a "$LOG"
export FLASHCTL_ORT_CUDA_TF32=0

JOB_START=$(date +%s)
# stage NAME TIMEOUT_S CMD...: run, log, record wall time and exit code; stdout kept in $W/NAME.out.
# The job as a whole must end by DEADLINE_S (a device call's limit): a stage gets what is left,
# and is skipped (exit code 125) when under 10 s is left.
stage() {
  local name=$1 limit=$2; shift 2
  if grep -q "^$name	.*	0$" "$W/stages.tsv"; then
    echo "   $name: passed in an earlier run of this JOB_WORK" | tee -a "$LOG"
    return 0
  fi
  local left=$((DEADLINE_S - ($(date +%s) - JOB_START)))
  if [ "$left" -lt 10 ]; then
    printf '%s\t%s\t%s\n' "$name" "skipped (deadline)" 125 >> "$W/stages.tsv"
    echo "   $name skipped: job deadline ${DEADLINE_S}s reached" | tee -a "$LOG"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name: $*" >> "$LOG"
  local t0=$(date +%s%N)
  timeout "$limit" "$@" > "$W/$name.out" 2>> "$LOG"
  local rc=$?
  local dt=$(( ($(date +%s%N) - t0) / 1000000 ))ms
  cat "$W/$name.out" >> "$LOG"
  printf '%s\t%s\t%s\n' "$name" "$dt" "$rc" >> "$W/stages.tsv"
  echo "   $name rc=$rc $dt" | tee -a "$LOG"
  collect
  return $rc
}
# results.json from everything so far (stage times, ms/iter lines, --json outputs)
collect() {
  python3 "$ROOT/scripts/gpu_collect.py" "$W" "$OUT/results.json" "$PROFILE" "$DEVICE" >> "$LOG" 2>&1
}

F=$FLASHCTL
D="--device $DEVICE"
FN="--featurenet $ROOT/fixtures/featurenet"  # the binary's built-in path is the build machine's
stage env 60 bash -c "nvidia-smi -L 2>/dev/null || echo no-gpu; $F --version"
# the eager convolution on the device, both ways (a few iterations each), after a warm-up that
# absorbs first-use costs (the driver's PTX compile when the carried cache does not apply)
stage conv_warmup 120 "$F" teacher train --dataset fashion-mnist --data-dir "$FM" --preset "$PRESET" \
  --batch "$TRAIN_BATCH" --iters 2 $D --out "$W/conv_warmup"
for conv in native im2col; do
  stage "conv_$conv" 120 env FLASHCTL_EAGER_CONV=$conv "$F" teacher train --dataset fashion-mnist \
    --data-dir "$FM" --preset "$PRESET" --batch "$TRAIN_BATCH" --iters 15 $D --out "$W/conv_$conv"
done
# in order of what the issue needs most, so a deadline cuts the least important stages:
# 1. teacher, 3-step student, its graph on ORT, its latency vs the teacher, the PyTorch peer
stage teacher_train $((T_TEACHER + 60)) "$F" teacher train --dataset fashion-mnist --data-dir "$FM" \
  --preset "$PRESET" --batch "$TRAIN_BATCH" --iters 1000000 --time-budget "$T_TEACHER" $D --out "$W/teacher"
distill_if() {
  stage "if${1}_distill" $((T_STUDENT + 60)) "$F" distill --teacher "$W/teacher" --steps "$1" \
    --iters 1000000 --time-budget "$T_STUDENT" $D --out "$W/if$1"
}
eval_model() {  # eval_model NAME MODEL [--steps K]
  local name=$1 model=$2; shift 2
  stage "${name}_eval" 120 "$F" eval --model "$model" "$@" --dataset fashion-mnist --data-dir "$FM" \
    --count "$EVAL_N" --seed 7 $D $FN --json
}
distill_if 3
stage export_fp32 120 "$F" export --model "$W/if3" --out "$W/e32/model.onnx"
VALIDATE_RT=$(echo "$RT,ort-cpu,tract" | tr ',' '\n' | awk '!seen[$0]++' | paste -sd, -)
stage validate_fp32 180 "$F" validate "$W/e32/model.onnx" --runtimes "$VALIDATE_RT" --runs "$RUNS" --json
stage bench_fp32 240 "$F" bench --model "$W/if3" --teacher "$W/teacher" --teacher-steps 50 --runtime "$RT" \
  --batch "$BENCH_BATCH" --runs "$RUNS" --out "$W/bench32" --json
# the PyTorch peer: same weights, same sampler plan, checked against the export's reference
if "$PYTHON" -c "import torch, diffusers" 2>/dev/null; then
  stage peer 300 "$PYTHON" "$ROOT/scripts/torch_peer.py" --model "$W/if3" --export "$W/e32" \
    --device "$DEVICE" --batch "$BENCH_BATCH" --modes "$PEER_MODES" --runs "$RUNS" \
    --train-batch "$TRAIN_BATCH" --profile --out "$W/peer.json"
else
  echo "   peer skipped: $PYTHON has no torch + diffusers" | tee -a "$LOG"
fi
# 2. ORT with TF32, where ORT's time goes, the fp16 graph
stage bench_fp32_tf32 240 env FLASHCTL_ORT_CUDA_TF32=1 "$F" bench --model "$W/if3" --runtime "$RT" \
  --batch "$BENCH_BATCH" --runs "$RUNS" --out "$W/bench32tf" --json
stage bench_profile 120 env FLASHCTL_ORT_PROFILE="$W/ortprof" "$F" bench --model "$W/if3" \
  --runtime "$RT" --batch "$BENCH_BATCH" --runs 5 --warmup 1 --out "$W/benchprof" --json
stage export_fp16 120 "$F" export --model "$W/if3" --precision fp16 --out "$W/e16/model.onnx"
stage validate_fp16 180 "$F" validate "$W/e16/model.onnx" --runtimes "$RT" --runs "$RUNS" --json
stage bench_fp16 240 "$F" bench --model "$W/if3" --teacher "$W/teacher" --teacher-steps 50 --runtime "$RT" \
  --precision fp16 --batch "$BENCH_BATCH" --runs "$RUNS" --out "$W/bench16" --json
# 3. quality: FD-FMNIST of the teacher (DDIM-50) and every student
eval_model teacher "$W/teacher" --steps "$TEACHER_EVAL_STEPS"
eval_model if3 "$W/if3"
for k in 1 2; do
  distill_if "$k"
  eval_model "if$k" "$W/if$k"
done
stage pairs 120 "$F" pairs generate --teacher "$W/teacher" --count "$PAIRS" --steps "$PAIR_STEPS" \
  --shard-size 512 --batch 256 $D --out "$W/pairs"
stage kdm_distill $((T_KDM + 60)) "$F" distill --method kdm --pairs "$W/pairs" --iters 1000000 \
  --time-budget "$T_KDM" --preset "$KDM_PRESET" $D --out "$W/kdm"
eval_model kdm "$W/kdm"
# what comes back: results.json, job.log, PNGs, the teacher and the 3-step student (<= 15 MiB parts)
tar -C "$W" -cf "$OUT/pngs.tar" $(cd "$W" && ls -d */eval/*.png */samples.png */loss.png 2>/dev/null)
tar -C "$W" -cJf "$W/models.tar.xz" teacher/config.json teacher/model.safetensors \
  if3/config.json if3/model.safetensors 2>> "$LOG"
(cd "$OUT" && split -b 15M -d -a 1 "$W/models.tar.xz" models.tar.xz.)
collect
echo "done: $(ls "$OUT")" | tee -a "$LOG"

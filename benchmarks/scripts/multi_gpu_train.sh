#!/usr/bin/env bash
# `yolojax train` through the CLI on all GPUs and on one: a generated 640 px shapes dataset, the real grain pipeline
# (RAM cache, augmentation rendered in the step), validation and checkpoints every epoch. On all GPUs twice: as the
# default launches it (one process per GPU, processes=auto) and as one process driving every GPU (processes=1).
# Then a default run interrupted by SIGINT to the launcher during its third epoch and resumed, compared with the
# uninterrupted run; with LOOP=1 also the loop's GPU busy share (benchmarks/scripts/bench_loop.py) on all GPUs and on
# one. Usage: bash benchmarks/scripts/multi_gpu_train.sh OUT
set -uo pipefail
out=${1:-/tmp/multi_cli}; mkdir -p "$out"
ngpu=$(nvidia-smi -L | wc -l); per_gpu=64; workers=$(( $(nproc) - 4 ))
runs=/tmp/runs; rm -rf "$runs"
data=$(shapes640)  # from gpu_env.sh, which the runner sources
echo "data $data"
common=(cfg=none model=yolov8n data="$data" imgsz=640 epochs=4 close_mosaic=1 cache=ram workers="$workers"
        project="$runs" plots=False)
train() {  # NAME GPUS [key=value ...]
  local name=$1 gpus=$2; shift 2
  local visible; visible=$(seq -s, 0 $((gpus - 1)))
  CUDA_VISIBLE_DEVICES=$visible timeout 300 python3 -m yolojax.cli train "${common[@]}" batch=$((per_gpu * gpus)) \
    name="$name" "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$?"; grep -E "^yolojax train|^Training|^epoch|Resuming|Interrupted" "$out/$name.log" | cut -c1-220
  cp "$runs/$name/results.csv" "$out/$name.csv" 2>/dev/null
}
train all_gpus "$ngpu"
train one_process "$ngpu" processes=1
train one_gpu 1
# interrupted once its results hold two epochs (the third is running), then resumed; the signal goes to the launcher
# alone, as Ctrl-C does (its children run in their own process group)
CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((ngpu - 1))) python3 -m yolojax.cli train "${common[@]}" \
  batch=$((per_gpu * ngpu)) name=resumed > "$out/resumed_part1.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  [ "$(wc -l < "$runs/resumed/results.csv" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.2
done
sleep 0.3; kill -INT $pid; wait $pid; echo "part 1 rc=$?"
grep -E "^epoch|Interrupted" "$out/resumed_part1.log"
CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((ngpu - 1))) timeout 300 python3 -m yolojax.cli train resume="$runs/resumed" \
  > "$out/resumed_part2.log" 2>&1; echo "part 2 rc=$?"; grep -E "^epoch|Resuming" "$out/resumed_part2.log"
cp "$runs/resumed/results.csv" "$out/resumed.csv"
python3 - "$runs" <<'PY' | tee "$out/resume_check.txt"
import sys, numpy as np, jax
from yolojax.models.weights import load_weights
runs = sys.argv[1]
a, _ = load_weights(f"{runs}/all_gpus/weights/last")
b, _ = load_weights(f"{runs}/resumed/weights/last")
diffs = [float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
print(f"resumed vs uninterrupted EMA weights: {len(diffs)} arrays, max abs diff {max(diffs):.3g}, "
      f"identical arrays {sum(d == 0 for d in diffs)}")
PY
[ "${LOOP:-0}" = 1 ] || exit 0
timeout 200 python3 benchmarks/scripts/bench_loop.py --batch $((per_gpu * ngpu)) --images 2560 --epochs 4 --cache ram \
  --data-dir /tmp/loop_images --out "$out/loop_all_gpus" 2>&1 | grep -v -iE "warn" | tail -n 4
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/scripts/bench_loop.py --batch $per_gpu --images 2560 --epochs 4 \
  --cache ram --data-dir /tmp/loop_images --out "$out/loop_one_gpu" 2>&1 | grep -v -iE "warn" | tail -n 4

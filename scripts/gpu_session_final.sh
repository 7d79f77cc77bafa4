#!/usr/bin/env bash
# Device call: the numbers for the README — e2e pipeline-fed training (deterministic mode), the train step in
# deterministic mode vs the reference, inference with the default XLA flags vs the reference. Results to $OUT/final/.
set -uo pipefail
out=${OUT:-/tmp/out}/final; mkdir -p "$out"
source scripts/gpu_env.sh
run_logged e2e_det 200 python3 scripts/bench_e2e.py --workers 14 --images 1024 --batches 12 --hsv-on-device true --deterministic --out "$out/e2e_n_det"
N=6 run_logged train_det 220 python3 scripts/bench_train.py --scales n --max-boxes 16 --deterministic --out "$out/train_step_det"
N=6 run_logged infer 130 python3 scripts/bench_infer.py --out "$out/infer"

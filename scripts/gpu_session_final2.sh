#!/usr/bin/env bash
# Device call: end-to-end pipeline-fed training with the prefetching feed (deterministic mode, HSV on device),
# v8n and v8s. Results to $OUT/final2/.
set -uo pipefail
out=${OUT:-/tmp/out}/final2; mkdir -p "$out"
source scripts/gpu_env.sh
run_logged e2e_n 220 python3 scripts/bench_e2e.py --workers 14 --images 3072 --batches 30 --hsv-on-device true --deterministic --out "$out/e2e_n_det"
run_logged e2e_s 220 python3 scripts/bench_e2e.py --scale s --workers 14 --images 3072 --batches 30 --hsv-on-device true --deterministic --out "$out/e2e_s_det"

#!/usr/bin/env bash
# Device call: end-to-end pipeline-fed training with the prefetching feed (deterministic mode, HSV on device),
# v8n and v8s. Results to $OUT/final2/.
set -uo pipefail
out=${OUT:-/tmp/out}/final2; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
r() { tag=$1; t=$2; shift 2; echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"; grep -v -iE "warn|leaked|cuda_timer|param_grad" "$out/$tag.log" | tail -n ${N:-4}; }
r e2e_n 220 python3 scripts/bench_e2e.py --workers 14 --images 3072 --batches 30 --hsv-on-device true --deterministic --out "$out/e2e_n_det"
r e2e_s 220 python3 scripts/bench_e2e.py --scale s --workers 14 --images 3072 --batches 30 --hsv-on-device true --deterministic --out "$out/e2e_s_det"

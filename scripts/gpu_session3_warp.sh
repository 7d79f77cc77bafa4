#!/usr/bin/env bash
# Device call (session 3): warp_on_device. Exactness of the rendered batches against OpenCV on this host, the
# render's cost, the host pipeline per core, and end-to-end busy share (RAM cache / JPEG decode). Results to
# $OUT/warp/.
set -uo pipefail
out=${OUT:-/tmp/out}/warp; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
N=6 run_logged check 240 python3 scripts/check_device_warp.py --out "$out/check.json"
run_logged data 200 python3 scripts/bench_data.py --cache both --repeats 1 --images 256 --warp-on-device --out "$out/data"
common="--images 1536 --batches 20 --hsv-on-device true --warp-on-device true --deterministic"
run_logged none14 200 python3 scripts/bench_e2e.py --workers 14 $common --out "$out/none14"
run_logged ram14 200 python3 scripts/bench_e2e.py --workers 14 --cache ram $common --out "$out/ram14"
run_logged none8 200 python3 scripts/bench_e2e.py --workers 8 $common --out "$out/none8"

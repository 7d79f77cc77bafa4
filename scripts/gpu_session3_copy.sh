#!/usr/bin/env bash
# Device call (session 3): ways of copying a batch to the device (1 / 2 / 4 copy threads, 8-piece image copies,
# plain device_put), each fed by a fresh epoch of the warp_on_device pipeline, RAM cache and JPEG decode.
# JSON results to $OUT/copy/.
set -uo pipefail
final=${OUT:-/tmp/out}/copy; mkdir -p "$final"
out=/tmp/logs; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
common="--images 1536 --batches 20 --hsv-on-device true --warp-on-device true --deterministic --settle 3 --copy-variants"
N=3 run_logged ram14 300 python3 scripts/bench_e2e.py --workers 14 --cache ram $common --out "$final/ram14"
N=3 run_logged none14 240 python3 scripts/bench_e2e.py --workers 14 $common --out "$final/none14"
rm -f "$final"/*.md

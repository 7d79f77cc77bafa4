#!/usr/bin/env bash
# Device call (session 3): where the end-to-end gap comes from. The copy path alone (batches already in host
# memory, no workers), the workers' CPU load (14 vs 6 workers), RAM cache vs JPEG decode. Results to $OUT/feed/.
set -uo pipefail
out=${OUT:-/tmp/out}/feed; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
common="--images 1536 --batches 20 --hsv-on-device true --deterministic"
run_logged ram14_feeds 300 python3 scripts/bench_e2e.py --workers 14 --cache ram --feeds $common --out "$out/ram14"
run_logged ram6 200 python3 scripts/bench_e2e.py --workers 6 --cache ram $common --out "$out/ram6"
run_logged none14 200 python3 scripts/bench_e2e.py --workers 14 $common --out "$out/none14"
for f in "$out"/*.json; do echo "$f"; cat "$f"; done

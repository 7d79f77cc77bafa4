#!/usr/bin/env bash
# Device call (session 3): where a fed step's time goes (producer draw, copy, wait, dispatch), with the warp on the
# device and on the CPU, RAM cache and JPEG decode. JSON results to $OUT/feed2/ (logs stay on the machine).
set -uo pipefail
source scripts/gpu_env.sh
results_dir feed2
common="--images 1536 --batches 20 --hsv-on-device true --deterministic --settle 5"
N=14 run_logged warp_ram14 240 python3 scripts/bench_e2e.py --workers 14 --cache ram --feeds --warp-on-device true $common --out "$final/warp_ram14"
N=14 run_logged cpu_ram14 200 python3 scripts/bench_e2e.py --workers 14 --cache ram --warp-on-device false $common --out "$final/cpu_ram14"
N=14 run_logged warp_none14 200 python3 scripts/bench_e2e.py --workers 14 --warp-on-device true $common --out "$final/warp_none14"
rm -f "$final"/*.md

#!/usr/bin/env bash
# Device call (session 3): ways of copying a batch to the device (1 / 2 / 4 copy threads, 8-piece image copies,
# plain device_put), each fed by a fresh epoch of the warp_on_device pipeline, RAM cache and JPEG decode.
# JSON results to $OUT/copy/. (Session 4 replaced --copy-variants, which also ran 8-piece and staged copies, by
# --variants; the nearest equivalent is given here.)
set -uo pipefail
source scripts/gpu_env.sh
results_dir copy
common="--images 1536 --batches 20 --hsv-on-device true --warp-on-device true --deterministic --settle 3 --variants direct1,direct4,plain2,direct2"
N=3 run_logged ram14 300 python3 scripts/bench_e2e.py --workers 14 --cache ram $common --out "$final/ram14"
N=3 run_logged none14 240 python3 scripts/bench_e2e.py --workers 14 $common --out "$final/none14"
rm -f "$final"/*.md

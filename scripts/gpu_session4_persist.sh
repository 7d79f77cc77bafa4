#!/usr/bin/env bash
# Device call (session 4): the train loop with one worker pool for the whole run (bench_loop.py), v8n JPEG decode
# (twice), JPEG decode with the workers niced by 10, and the RAM cache. JSON results to $OUT/persist/.
set -uo pipefail
source scripts/gpu_env.sh
results_dir persist
common="--workers 14 --images 3200 --epochs 4"
N=1 run_logged n_none 170 python3 scripts/bench_loop.py $common --out "$final/loop_n_none14"
N=1 run_logged n_none_nice 150 python3 scripts/bench_loop.py $common --worker-nice 10 --out "$final/loop_n_none14_nice10"
N=1 run_logged n_ram 150 python3 scripts/bench_loop.py $common --cache ram --out "$final/loop_n_ram14"
N=1 run_logged n_none_b 150 python3 scripts/bench_loop.py $common --out "$final/loop_n_none14_b"

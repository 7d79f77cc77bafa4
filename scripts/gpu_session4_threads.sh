#!/usr/bin/env bash
# Device call (session 4): the train loop (one worker pool per run, gc settled between epochs) with 2 and 4 copy
# threads, JPEG decode and RAM cache. JSON results to $OUT/threads/.
set -uo pipefail
source scripts/gpu_env.sh
results_dir threads
common="--workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images"
N=1 run_logged t2 230 python3 scripts/bench_loop.py $common --out "$final/loop_n_none14_t2"
N=1 run_logged t4 110 python3 scripts/bench_loop.py $common --copy-threads 4 --depth 4 --out "$final/loop_n_none14_t4"
N=1 run_logged ram_t4 120 python3 scripts/bench_loop.py $common --cache ram --copy-threads 4 --depth 4 --out "$final/loop_n_ram14_t4"
N=1 run_logged ram_t2 120 python3 scripts/bench_loop.py $common --cache ram --out "$final/loop_n_ram14_t2"

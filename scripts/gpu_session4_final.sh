#!/usr/bin/env bash
# Device call (session 4, final): the train loop with its defaults (4 copy threads, depth 4, one worker pool per
# run, gc settled between epochs): v8n JPEG decode (twice, 6 epochs), RAM cache, v8s JPEG; 2 copy threads again.
# JSON results to $OUT/final/.
set -uo pipefail
source scripts/gpu_env.sh
results_dir final
common="--workers 14 --images 3200 --data-dir /tmp/bench_images"
N=1 run_logged n_none 230 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_none14"
N=1 run_logged n_ram 100 python3 scripts/bench_loop.py $common --epochs 4 --cache ram --out "$final/loop_n_ram14"
N=1 run_logged s_none 140 python3 scripts/bench_loop.py $common --epochs 4 --scale s --out "$final/loop_s_none14"
N=1 run_logged n_none_b 90 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_none14_b"
N=1 run_logged n_none_t2 90 python3 scripts/bench_loop.py $common --epochs 4 --copy-threads 2 --depth 3 --out "$final/loop_n_none14_t2"

#!/usr/bin/env bash
# Device call (session 4): the train loop with cache=disk (the reference's .npy beside each image): the first run
# writes the .npy files during its first epoch, the second reads them throughout. JSON results to $OUT/disk/.
set -uo pipefail
source scripts/gpu_env.sh
results_dir disk
common="--workers 14 --images 3200 --data-dir /tmp/bench_images --cache disk"
N=1 run_logged disk1 240 python3 scripts/bench_loop.py $common --epochs 4 --out "$final/loop_n_disk14_first"
N=1 run_logged disk2 120 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_disk14"

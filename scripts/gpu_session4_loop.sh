#!/usr/bin/env bash
# Device call (session 4): the train loop itself fed by the pipeline (bench_loop.py: per-epoch steady ms/step, epoch
# gaps, the resident step), v8n JPEG / RAM and v8s, then the device-warp exactness check with MixUp on the GPU.
# JSON results to $OUT/loop/ (logs stay on the machine).
set -uo pipefail
source scripts/gpu_env.sh
results_dir loop
N=2 run_logged n_none 200 python3 scripts/bench_loop.py --workers 14 --images 3200 --epochs 4 --out "$final/loop_n_none14"
N=2 run_logged n_ram 200 python3 scripts/bench_loop.py --workers 14 --images 3200 --epochs 4 --cache ram --out "$final/loop_n_ram14"
N=2 run_logged s_none 200 python3 scripts/bench_loop.py --scale s --workers 14 --images 3200 --epochs 3 --out "$final/loop_s_none14"
N=6 run_logged warp 200 python3 scripts/check_device_warp.py --out "$final/device_warp_check.json"

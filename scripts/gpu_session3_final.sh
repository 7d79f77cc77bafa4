#!/usr/bin/env bash
# Device call (session 3, final): host pipeline per core with the warp on the device (BGR tiles) against the
# reference, and end-to-end busy share with warp_on_device: JPEG decode with 14 / 12 workers, RAM cache, v8n and
# v8s. JSON results to $OUT/final/ (logs stay on the machine).
set -uo pipefail
source scripts/gpu_env.sh
results_dir final
N=4 run_logged data 200 python3 scripts/bench_data.py --cache both --repeats 1 --images 256 --warp-on-device --out "$final"
common="--images 1536 --batches 20 --hsv-on-device true --warp-on-device true --deterministic --settle 5"
N=3 run_logged none14 200 python3 scripts/bench_e2e.py --workers 14 $common --out "$final/e2e_n_none14"
N=3 run_logged none12 200 python3 scripts/bench_e2e.py --workers 12 $common --out "$final/e2e_n_none12"
N=3 run_logged ram14 200 python3 scripts/bench_e2e.py --workers 14 --cache ram $common --out "$final/e2e_n_ram14"
N=3 run_logged s_ram14 240 python3 scripts/bench_e2e.py --scale s --workers 14 --cache ram $common --out "$final/e2e_s_ram14"
rm -f "$final"/e2e*.md

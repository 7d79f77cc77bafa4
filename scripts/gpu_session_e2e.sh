#!/usr/bin/env bash
# Device call: device-HSV exactness + cost on the GPU, data pipeline per core (CPU-only vs HSV on device),
# end-to-end pipeline-fed training throughput. Results to $OUT/e2e/.
set -uo pipefail
out=${OUT:-/tmp/out}/e2e; mkdir -p "$out"
source scripts/gpu_env.sh
run_logged hsv_check 90 python3 scripts/check_device_hsv.py
run_logged data_cpu 150 python3 scripts/bench_data.py --cache ram --repeats 1 --images 256 --out "$out/data"
run_logged data_hsvdev 150 python3 scripts/bench_data.py --cache ram --repeats 1 --images 256 --hsv-on-device --out "$out/data"
run_logged e2e_n 250 python3 scripts/bench_e2e.py --workers 14 --images 1024 --batches 20 --hsv-on-device true --out "$out/e2e_n"

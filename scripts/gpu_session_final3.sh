#!/usr/bin/env bash
# Device call: end-to-end v8n with the threaded prefetch feed, cache none and cache ram (shared file), 40 fed steps.
set -uo pipefail
out=${OUT:-/tmp/out}/final3; mkdir -p "$out"
source scripts/gpu_env.sh
run_logged e2e_none 200 python3 scripts/bench_e2e.py --workers 14 --images 3072 --batches 40 --hsv-on-device true --deterministic --out "$out/e2e_n_none"
run_logged e2e_ram 240 python3 scripts/bench_e2e.py --workers 14 --images 3072 --batches 40 --hsv-on-device true --deterministic --cache ram --out "$out/e2e_n_ram"

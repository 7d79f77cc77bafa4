#!/usr/bin/env bash
# Device call: end-to-end pipeline-fed training throughput (cache none / ram, HSV on device), and one compile-flag
# variant of the train step. Results to $OUT/e2e2/.
set -uo pipefail
out=${OUT:-/tmp/out}/e2e2; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
run_logged e2e_none 240 python3 scripts/bench_e2e.py --workers 14 --images 1536 --batches 16 --hsv-on-device true --out "$out/e2e_n_none"
run_logged e2e_ram 200 python3 scripts/bench_e2e.py --workers 14 --images 1536 --batches 16 --hsv-on-device true --cache ram --out "$out/e2e_n_ram"
unset JAX_COMPILATION_CACHE_DIR
XLA_FLAGS="--xla_gpu_autotune_level=1 --xla_gpu_exclude_nondeterministic_ops=true" run_logged train_l1_det 150 python3 scripts/profile_gpu.py train --calls 2 --tag l1_det --out "$out/train_l1_det.json"

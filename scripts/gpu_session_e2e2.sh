#!/usr/bin/env bash
# Device call: end-to-end pipeline-fed training throughput (cache none / ram, HSV on device), and one compile-flag
# variant of the train step. Results to $OUT/e2e2/.
set -uo pipefail
out=${OUT:-/tmp/out}/e2e2; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
r() { tag=$1; t=$2; shift 2; echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"; grep -v -iE "warn|leaked" "$out/$tag.log" | tail -n 4; }
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
r e2e_none 240 python3 scripts/bench_e2e.py --workers 14 --images 1536 --batches 16 --hsv-on-device true --out "$out/e2e_n_none"
r e2e_ram 200 python3 scripts/bench_e2e.py --workers 14 --images 1536 --batches 16 --hsv-on-device true --cache ram --out "$out/e2e_n_ram"
unset JAX_COMPILATION_CACHE_DIR
XLA_FLAGS="--xla_gpu_autotune_level=1 --xla_gpu_exclude_nondeterministic_ops=true" r train_l1_det 150 python3 scripts/profile_gpu.py train --calls 2 --tag l1_det --out "$out/train_l1_det.json"

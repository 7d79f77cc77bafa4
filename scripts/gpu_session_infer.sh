#!/usr/bin/env bash
# Device call: inference latency with yolojax's default XLA flags, with and without concurrent graph regions,
# reference in the same runs. Results to $OUT/infer/.
set -uo pipefail
out=${OUT:-/tmp/out}/infer; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
r() { tag=$1; t=$2; shift 2; echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"; grep -v -iE "warn|leaked|cuda_timer|param_grad" "$out/$tag.log" | tail -n ${N:-3}; }
CONC="--xla_gpu_graph_enable_concurrent_region=true"
N=1 r prof_default 60 python3 scripts/profile_gpu.py infer --conf 0.25 --out "$out/prof_default.json"
XLA_FLAGS="$CONC" N=1 r prof_concurrent 60 python3 scripts/profile_gpu.py infer --conf 0.25 --out "$out/prof_concurrent.json"
r bench_default 130 python3 scripts/bench_infer.py --out "$out/bench_default"
XLA_FLAGS="$CONC" r bench_concurrent 130 python3 scripts/bench_infer.py --out "$out/bench_concurrent"

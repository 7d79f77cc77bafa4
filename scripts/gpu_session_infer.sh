#!/usr/bin/env bash
# Device call: inference latency with yolojax's default XLA flags, with and without concurrent graph regions,
# reference in the same runs. Results to $OUT/infer/.
set -uo pipefail
out=${OUT:-/tmp/out}/infer; mkdir -p "$out"
source scripts/gpu_env.sh
CONC="--xla_gpu_graph_enable_concurrent_region=true"
N=1 run_logged prof_default 60 python3 scripts/profile_gpu.py infer --conf 0.25 --out "$out/prof_default.json"
XLA_FLAGS="$CONC" N=1 run_logged prof_concurrent 60 python3 scripts/profile_gpu.py infer --conf 0.25 --out "$out/prof_concurrent.json"
run_logged bench_default 130 python3 scripts/bench_infer.py --out "$out/bench_default"
XLA_FLAGS="$CONC" run_logged bench_concurrent 130 python3 scripts/bench_infer.py --out "$out/bench_concurrent"

#!/usr/bin/env bash
# Device call: XLA flag variants for inference latency (bench_infer, reference in the same run) and the train step.
set -uo pipefail
out=${OUT:-/tmp/out}/flags; mkdir -p "$out"
source scripts/gpu_env.sh
export YOLOJAX_XLA_FLAGS=0  # variants name their XLA flags themselves ("default" = XLA's defaults)
CB="--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1"
b() { tag=$1; shift; echo "== $tag"; timeout "${T:-120}" python3 scripts/bench_infer.py --iters 200 --warmup 20 --out "$out/$tag" "$@" 2>&1 | grep -v -iE "warn" | tail -n 8; }
p() { tag=$1; shift; echo "== $tag"; timeout "${T:-200}" python3 scripts/profile_gpu.py "$@" --tag "$tag" --out "$out/$tag.json" 2>&1 | grep -v -iE "warn" | head -n 1; }
T=120 b infer_default
XLA_FLAGS="$CB" T=120 b infer_cmdbuf
XLA_FLAGS="$CB --xla_gpu_experimental_enable_conv_fusion=true" T=60 p infer_cmdbuf_convfusion infer --conf 0.25
XLA_FLAGS="$CB" T=60 p infer_cmdbuf_p infer --conf 0.25
XLA_FLAGS="$CB --xla_gpu_dump_autotune_logs_to=$out/autotune_logs" T=170 p train_cmdbuf train --calls 3
ls -la "$out" | head -20

#!/usr/bin/env bash
# Device call: trace inference (b1) and the train step under a few XLA flag sets; results to $OUT/profile/.
set -uo pipefail
out=${OUT:-/tmp/out}/profile; mkdir -p "$out"
source scripts/gpu_env.sh
export YOLOJAX_XLA_FLAGS=0  # variants name their XLA flags themselves ("default" = XLA's defaults)
p() { tag=$1; shift; echo "== $tag"; timeout "${T:-200}" python3 scripts/profile_gpu.py "$@" --tag "$tag" --out "$out/$tag.json" 2>&1 | grep -v -iE "warn" | tail -n 18; }
CB="--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1"
for what in ${WHAT:-infer train}; do
  if [ "$what" = infer ]; then
    T=120 p infer_default infer
    XLA_FLAGS="$CB" T=120 p infer_cmdbuf infer
    T=120 p infer_b32 infer --batch 32 --calls 5
  fi
  if [ "$what" = train ]; then
    T=200 p train_default train --calls 3
    XLA_FLAGS="--xla_gpu_autotune_level=1" T=150 p train_autotune1 train --calls 3
    XLA_FLAGS="--xla_gpu_enable_triton_gemm=false" T=150 p train_notriton train --calls 3
  fi
done

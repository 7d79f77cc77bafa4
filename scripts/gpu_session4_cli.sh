#!/usr/bin/env bash
# Device call (session 4): `yolojax train` through the CLI on the GPU with the shapes recipe, mosaic on, batch 64,
# 8 workers (warp_on_device and hsv_on_device resolve to on): the main job end to end with one worker pool per run.
set -uo pipefail
source scripts/gpu_env.sh
results_dir cli
N=12 run_logged train 300 python3 -m yolojax.cli train batch=64 nbs=64 workers=8 epochs=4 mosaic=1.0 time=0.1 \
  project=/tmp/runs name=gpu
cp /tmp/runs/gpu/results.csv "$final/" 2>/dev/null; cp /tmp/runs/gpu/args.yaml "$final/" 2>/dev/null
grep -iE "warp|hsv|device" "$out/train.log" | grep -viE "warn" | head -5

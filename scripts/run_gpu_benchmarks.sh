#!/usr/bin/env bash
# Every GPU benchmark of the project in one go, for the lent GPU machine (its python3 has torch, jax, flax, optax,
# orbax; ultralytics 8.2.103 and grain travel as wheels in .whl/). Usage: bash scripts/run_gpu_benchmarks.sh PART OUT
#   PART = train | ops | e2e | all | multi | multi_s | multi_proc | multi_cli ; OUT = folder for the results (benchmarks/ files are
#   copied there at the end). The multi* parts need a machine of several GPUs: multi = v8n scaling with a device trace
#   per exchange variant + the reference under DDP; multi_s = v8n and v8s scaling; multi_proc = v8n on one
#   process per GPU (jax.distributed); multi_cli = `yolojax train` on 1 and on
#   all GPUs (a generated 640 px dataset, validation, checkpoints, an interrupted and resumed run).
set -uo pipefail
part=${1:-train}; out=${2:-/tmp/bench_out}
mkdir -p "$out"
source scripts/gpu_env.sh
run() { echo "== $*"; timeout "${T:-300}" "$@" 2>&1 | grep -v -i -E "warn|settings|yolo settings" | tail -n 25; }
if [ "$part" = train ] || [ "$part" = all ]; then
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=300 run python3 scripts/bench_train.py --scales n,s --max-boxes 16,100 --compile-cache /tmp/jaxcache --out benchmarks/train_step
  T=220 run python3 scripts/bench_train.py --scales n --max-boxes 16 --deterministic --out benchmarks/train_step_deterministic
  T=90 run python3 scripts/bench_train.py --scales n --max-boxes 16 --no-reference --steps 5 --compile-cache /tmp/jaxcache --out benchmarks/train_step_warm_cache
fi
if [ "$part" = ops ] || [ "$part" = all ]; then
  T=80 run python3 scripts/bench_assign_loss.py --iters 30
  T=100 run python3 scripts/bench_infer.py
  T=70 run python3 scripts/bench_roi.py
  T=90 run python3 scripts/bench_val.py --images 64 --half
fi
if [ "$part" = e2e ] || [ "$part" = ops ] || [ "$part" = all ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=240 run python3 scripts/check_device_warp.py --out benchmarks/device_warp_check.json
  T=200 run python3 scripts/bench_data.py --cache both --repeats 1 --images 256 --warp-on-device
  T=300 run python3 scripts/bench_e2e.py --workers 14 --images 1536 --batches 20 --hsv-on-device true \
    --warp-on-device true --deterministic --settle 3 --variants direct2,ready2,populate2,staged2 --rounds 2
  T=240 run python3 scripts/bench_loop.py --workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images \
    --cache ram --out benchmarks/loop_n_ram
  T=150 run python3 scripts/bench_loop.py --workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images \
    --out benchmarks/loop_n_jpeg
fi
if [[ "$part" = multi* ]]; then  # compiled programs and autotuning results carried between calls in .jaxcache/
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  [ -f .jaxcache/jaxcache.tar ] && tar xf .jaxcache/jaxcache.tar -C /tmp
fi
if [ "$part" = multi ]; then
  ngpu=$(nvidia-smi -L | wc -l)
  T=330 run python3 scripts/bench_scaling.py --scales n --out "$out/scaling_n.json"
  T=150 run python3 -m torch.distributed.run --nproc_per_node "$ngpu" scripts/bench_ddp_reference.py --scales n,s \
    --out "$out/ddp_reference.json"
  T=100 run python3 scripts/bench_ddp_reference.py --scales n,s --out "$out/single_reference.json"
  T=90 run python3 scripts/profile_gpu.py infer --batch 1 --calls 3  # the inference flags with several GPUs present
fi
if [ "$part" = multi_s ]; then
  T=150 run python3 scripts/bench_scaling.py --scales n --calls 3 --out "$out/scaling_n.json"
  T=240 run python3 scripts/bench_scaling.py --scales s --exchanges flat,none --calls 3 --out "$out/scaling_s.json"
  CUDA_VISIBLE_DEVICES=0 T=150 run python3 scripts/bench_loop.py --batch 64 --images 2560 --epochs 4 --cache ram \
    --data-dir /tmp/loop_images --out "$out/loop_one_gpu"
fi
if [ "$part" = multi_proc ]; then  # one process per GPU through jax.distributed, against one process for all
  ngpu=$(nvidia-smi -L | wc -l)
  T=150 run python3 scripts/bench_scaling.py --scales n --exchanges flat --calls 3 --out "$out/scaling_n_one_process.json"
  for i in $(seq 0 $((ngpu - 1))); do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      timeout 240 python3 scripts/bench_scaling.py --scales n --exchanges flat --calls 3 \
      --out "$out/scaling_n_processes.json" > "/tmp/proc$i.log" 2>&1 &
  done
  wait; grep -v cuda_timer /tmp/proc0.log | tail -n 6; tail -n 3 /tmp/proc1.log
fi
if [ "$part" = multi_cli ]; then
  T=500 run bash scripts/multi_gpu_train.sh "$out"
fi
if [[ "$part" = multi* ]]; then
  tar cf "$out/jaxcache.tar" -C /tmp jaxcache; ls -la "$out/jaxcache.tar"
else
  tar czf "$out/benchmarks_$part.tgz" benchmarks
fi

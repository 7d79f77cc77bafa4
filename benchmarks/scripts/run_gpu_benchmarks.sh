#!/usr/bin/env bash
# Every GPU benchmark of the project, for the lent GPU machine (its python3 has torch, jax, flax, optax, orbax;
# ultralytics 8.2.103 and grain travel as wheels in .whl/). Run from the repository root:
#   bash benchmarks/scripts/run_gpu_benchmarks.sh PART OUT
# OUT is the folder for the results (train, ops, e2e and all also archive benchmarks/ there). PART:
#   train    the train step against the reference (max_boxes 16 / 100, deterministic, warm compile cache)
#   ops      assigner + loss, inference, RoI ops, validation, then everything of e2e
#   e2e      device-warp exactness, host pipeline per core, copy ways of the fed step, the train loop's busy share
#   all      train + ops (+ e2e)
#   profile  device traces and XLA-flag variants of inference and of the train step's compile
#   hsv      device-HSV exactness and cost, host pipeline per core with and without HSV on the device
#   feed     where a fed step's time goes: copy from memory, worker count, warp on the CPU, niced workers, v8s
#   loop     the train loop's busy share: v8s, cache=disk (writing, then reading the .npy files), 2 copy threads
#   cli      `yolojax train` with the shapes recipe on one GPU, warp and HSV left to `auto`
# The multi* parts need a machine of several GPUs: multi = v8n scaling with a device trace per exchange variant +
# the reference under DDP; multi_s = v8n and v8s scaling; multi_proc = v8n on one process per GPU
# (jax.distributed); multi_proc_cli = `yolojax train` with one process per GPU; multi_cli = `yolojax train` on 1 and on all GPUs (a generated 640 px dataset, validation,
# checkpoints, an interrupted and resumed run); multi_feed = the 2-GPU feed alone (copy variants, no step) and v8s
# against the reference under DDP on the same machine; multi_loop = the loop's busy share, 4 vs 8 copy threads;
# multi_peer84 = ultralytics 8.4.190 under torch.compile + DDP (carry .whl84/) against our scaling, same machine;
# multi_ram_cache = `yolojax train` launched on all GPUs with cache=ram, 2 epochs from empty caches, the shared cache
# files (one per split, written by process 0, mapped by the others) and the host memory listed every 4 s;
# multi_dispatch = the deterministic step on 1 and all GPUs with host dispatch times, with and without CUDA graphs of
# the convolutions, and as one process per GPU; multi_proc_graphs = one process per GPU with CUDA graphs of the
# convolutions; multi_launch = one process per GPU (the train job's layout), deterministic v8n and v8s, against one
# GPU.
#   peers    the train step and inference, ours against ultralytics 8.2.103 eager
#   peers84  the newest reference (8.4.190, carried in .whl84/): its train step eager and under torch.compile, and
#            inference against ours (run peers and peers84 on the same machine, or compare only within each)
#   speed    the train step's profile by kernel category with bytes and the memory floor, compile-time variants
#            (cold caches), inference b1 / b32; BASE=<tree> profiles another tree's code first in the same call
#   norm     the BatchNorm + SiLU layers alone, per activation shape (VARIANTS=a,b,...: backward formulations)
#   recipe   `yolojax train` with no arguments on the GPU with float32 compute, with augmentation on the host, both,
#            and on the host's CPU cores: the final mAP of each (is the GPU run's lower mAP the bf16 compute?)
#   wgrad    the k x k convolutions' weight gradients alone: cuDNN's against products over shifted views, with the
#            train job's deterministic flag and without; then the narrow 3x3 convolutions on 2x2 pixel blocks
#            (WGRAD=0: those alone; BLOCKS=c: up to c input channels)
#   infer_blocks  bench_infer at batches 1, 8, 32 with inference over pixel blocks from batch 1 on and never
#            (BASE=<tree> first), then folded-forward profiles at batch 1 and 32
#   infer_overhead  batch-1 inference's host costs: profiles of forward + NMS with and without CUDA graphs, the
#            arguments alone, the NMS alone; batch 32 likewise
#   infer_packed  folded inference variables per array against packed in one buffer per dtype (profiles and
#            bench_infer at batch 1 and 32)
#   infer    batch-1 / batch-32 inference: BASE=<tree>'s and this tree's profile, the NMS check, bench_infer against
#            8.2.103 and (when .whl84/ came along) 8.4.190
#   queued_ab  the train step's queued time, BASE=<tree> and this tree alternating three times, 6 rounds each
#   infer_processes  inference with the inference job's flags in several fresh processes, batch 1 and 32: rc of each
#   infer_check  folded vs plain inference variables and NMS results over repeated calls, per command-buffer flag set
#   infer_variables  inference with the weights passed per array, flat, as constants, folded, folded + OHWI
#   val_check  `yolojax train` with no arguments, then its best weights validated under the train job's XLA flags
#            (deterministic, as validation inside training), the inference job's and on the CPU: the same mAP each;
#            then `yolojax predict` on the val images
#   train_graphs  the 1-GPU train step with its convolutions in CUDA graphs (+CONVOLUTION) against without,
#            deterministic (ROUNDS alternating) and XLA's default kernels (DEFAULT_KERNELS=0: skip): compile, ms, digests
#   det_cache  a deterministic compile in a cache folder holding a non-deterministic run's autotuning results
#            (WAYS="library jax": through `yolojax bench`, through JAX's own cache setup)
#   conv_tuning  `yolojax autotune`, then the deterministic step with the tuned convolutions against the plain one,
#            ROUNDS alternating processes each (SCALE), with bit-for-bit repeat digests
#   export   ONNX Runtime (CPU provider, the host's cores) latency of our ONNX export against the reference's
set -uo pipefail
part=${1:-train}; out=${2:-/tmp/bench_out}
mkdir -p "$out"
S=benchmarks/scripts
source $S/gpu_env.sh
# cold-compile cache folders live under a folder of this invocation: a machine kept warm between calls keeps /tmp,
# and a name reused from an earlier call would time a cache hit as a cold compile
cold=/tmp/cold_$(date +%s%N)
run() { echo "== $*"; timeout "${T:-300}" "$@" 2>&1 | grep -v -i -E "warn|settings|yolo settings" | tail -n "${N:-25}"; }
if [ "$part" = train ] || [ "$part" = all ]; then
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=300 run python3 $S/bench_train.py --scales n,s --max-boxes 16,100 --compile-cache /tmp/jaxcache \
    --out benchmarks/train_step
  T=220 run python3 $S/bench_train.py --scales n --max-boxes 16 --deterministic \
    --out benchmarks/train_step_deterministic
  T=90 run python3 $S/bench_train.py --scales n --max-boxes 16 --no-reference --steps 5 --compile-cache /tmp/jaxcache \
    --out benchmarks/train_step_warm_cache
fi
if [ "$part" = ops ] || [ "$part" = all ]; then
  T=80 run python3 $S/bench_assign_loss.py --iters 30
  T=100 run python3 $S/bench_infer.py
  T=70 run python3 $S/bench_roi.py
  T=90 run python3 $S/bench_val.py --images 64 --half
fi
if [ "$part" = e2e ] || [ "$part" = ops ] || [ "$part" = all ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=240 run python3 $S/check_device_warp.py --out benchmarks/device_warp_check.json
  T=200 run python3 $S/bench_data.py --cache both --repeats 1 --images 256 --warp-on-device
  T=300 run python3 $S/bench_e2e.py --workers 14 --images 1536 --batches 20 --hsv-on-device true \
    --warp-on-device true --deterministic --settle 3 --variants direct2,ready2,populate2,staged2 --rounds 2
  T=240 run python3 $S/bench_loop.py --workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images \
    --cache ram --out benchmarks/loop_n_ram
  T=150 run python3 $S/bench_loop.py --workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images \
    --out benchmarks/loop_n_jpeg
fi
if [ "$part" = profile ]; then  # variants name their XLA flags themselves: "default" is XLA's defaults
  export YOLOJAX_XLA_FLAGS=0
  CB="--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1"
  CONC="--xla_gpu_graph_enable_concurrent_region=true"
  p() { local tag=$1; shift; N=18 run python3 $S/profile_gpu.py "$@" --tag "$tag" --out "$out/profile_$tag.json"; }
  b() { local tag=$1; shift; N=8 run python3 $S/bench_infer.py --iters 200 --warmup 20 --out "$out/infer_$tag" "$@"; }
  T=120 p infer_default infer
  XLA_FLAGS="$CB" T=120 p infer_cmdbuf infer
  XLA_FLAGS="$CB $CONC" T=60 p infer_concurrent infer --conf 0.25
  XLA_FLAGS="$CB --xla_gpu_experimental_enable_conv_fusion=true" T=60 p infer_cmdbuf_convfusion infer --conf 0.25
  T=120 p infer_b32 infer --batch 32 --calls 5
  T=120 b default
  XLA_FLAGS="$CB" T=120 b cmdbuf
  XLA_FLAGS="$CB $CONC" T=130 b concurrent
  T=200 p train_default train --calls 3
  XLA_FLAGS="--xla_gpu_autotune_level=1" T=150 p train_autotune1 train --calls 3
  XLA_FLAGS="--xla_gpu_enable_triton_gemm=false" T=150 p train_notriton train --calls 3
  XLA_FLAGS="--xla_gpu_autotune_level=1 --xla_gpu_exclude_nondeterministic_ops=true" T=150 \
    p train_l1_det train --calls 2
  XLA_FLAGS="$CB --xla_gpu_dump_autotune_logs_to=$out/autotune_logs" T=170 p train_cmdbuf train --calls 3
fi
if [ "$part" = speed ]; then  # the train step by kernel category (bytes, bandwidth, memory floor) and compile variants
  # BASE=<folder holding another tree's yolojax/ and benchmarks/scripts/> profiles that code first, in the same call;
  # SCALE (default n); PEERS=1 then times ultralytics 8.4 eager and under torch.compile on the same card;
  # DET_STEP=1 also profiles both trees' step with the deterministic flag; PATCH="pkg.module.NAME=json" also
  # profiles this tree with that module constant set (tags patched_train, patched_train_det); GAPS=1 adds where the
  # GPU waits between kernels in queued steps, DUMP_STEP=1 the compiled step's HLO and one step's events (dump_<tag>/;
  # a BASE tree needs a profile_gpu.py with those options)
  export YOLOJAX_XLA_FLAGS=1 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  DET="--xla_gpu_exclude_nondeterministic_ops=true"
  sc=(--scale "${SCALE:-n}" --queued-rounds "${QUEUED_ROUNDS:-1}")  # QUEUED_ROUNDS: best of that many queued runs
  [ "${GAPS:-0}" = 1 ] && sc+=(--gaps)
  p() { local tag=$1 dir=$2; shift 2
    [ "${DUMP_STEP:-0}" = 1 ] && [ "$1" = train ] && set -- "$@" --dump "$out/dump_$tag"
    (cd "$dir" && N=${N:-34} run python3 benchmarks/scripts/profile_gpu.py "$@" --print-top 30 --tag "$tag" \
      --out "$out/$tag.json"); }
  cache() { export JAX_COMPILATION_CACHE_DIR=$cold/jc_$1; }  # a new name = an empty cache = a cold compile
  # BASE="<tree> <tree> ...": several trees, tagged base_<folder> (one tree: base); DEFAULT_STEP=0 skips the steps
  # with XLA's default kernels (each autotunes for a minute), for A/Bs of fusions alone with DET_STEP=1
  btag() { [ "$(echo ${BASE:-} | wc -w)" -gt 1 ] && echo "base_$(basename "$1" | tr -d .)" || echo base; }
  if [ "${DEFAULT_STEP:-1}" = 1 ]; then
    cache main; T=200 p train . train --calls 3 "${sc[@]}"
    for tree in ${BASE:-}; do
      cache "$(btag "$tree")"; T=240 p "$(btag "$tree")_train" "$tree" train --calls 3 "${sc[@]}"
    done
    cache patched; [ -n "${PATCH:-}" ] && T=240 p patched_train . train --calls 3 "${sc[@]}" --patch "$PATCH"
  fi
  if [ "${DET_STEP:-0}" = 1 ]; then  # the same with the train job's deterministic flag
    cache det_main; XLA_FLAGS="$DET" T=150 p train_det . train --calls 3 "${sc[@]}"
    for tree in ${BASE:-}; do
      cache "det_$(btag "$tree")"
      XLA_FLAGS="$DET" T=150 p "$(btag "$tree")_train_det" "$tree" train --calls 3 "${sc[@]}"
    done
    cache det_patched
    [ -n "${PATCH:-}" ] && XLA_FLAGS="$DET" T=150 p patched_train_det . train --calls 3 "${sc[@]}" --patch "$PATCH"
  fi
  if [ "${STEP_ONLY:-0}" != 1 ]; then  # STEP_ONLY=1: the step (and the peers) only
    cache det; XLA_FLAGS="$DET" T=150 p cold_train_det . train --calls 3 "${sc[@]}"
    cache main; [ -n "${BASE:-}" ] && N=8 T=100 p base_infer "$BASE" infer --calls 5 --conf 0.25
    N=8 T=100 p infer . infer --calls 5 --conf 0.25
    N=8 T=100 p infer_b32 . infer --calls 5 --conf 0.25 --batch 32
  fi
  if [ "${PEERS:-0}" = 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site84 .whl84/*.whl
    T=400 N=12 PYTHONPATH=/tmp/site84:$PYTHONPATH run python3 -m yolojax.cli bench scales="${SCALE:-n}" ours=false \
      reference_compile=true out="$out/peers_84"
  fi
fi
if [ "$part" = det_cache ]; then  # a deterministic compile in a cache folder that holds a non-deterministic run's
  # autotuning results (copied in beside nothing else): WAYS="library jax" (default library): through `yolojax bench`
  # (the library's cache setup) and / or JAX's own (JAX_COMPILATION_CACHE_DIR; bench_conv_tuning.py's child, with the
  # digests of two steps three times); a fresh deterministic compile for comparison on the jax way
  DET="--xla_gpu_exclude_nondeterministic_ops=true"
  seeded() { mkdir -p "$2" && cp -r "$1/xla_gpu_per_fusion_autotune_cache_dir" "$2/" && \
    echo "autotuning files copied: $(find "$2" -type f | wc -l)"; }
  for way in ${WAYS:-library}; do
    if [ "$way" = library ]; then
      b() { T=200 run python3 -m yolojax.cli bench scales="${SCALE:-n}" reference=false steps=20 "$@"; }
      b deterministic=false compile_cache="$cold/lib_a" out="$out/det_cache_library_nondet"
      seeded "$cold/lib_a" "$cold/lib_b"
      b deterministic=true compile_cache="$cold/lib_b" out="$out/det_cache_library_det_after_nondet"
    else
      one() { local file="$out/det_cache_jax_$1.json"
        JAX_COMPILATION_CACHE_DIR=$2 XLA_FLAGS="$3" YOLOJAX_XLA_FLAGS=0 timeout 200 python3 $S/bench_conv_tuning.py \
          --child --scale "${SCALE:-n}" | tail -n 1 > "$file"; echo "== $1: $(cat "$file")"; }
      one nondet "$cold/jax_a" ""
      seeded "$cold/jax_a" "$cold/jax_b"
      one det_after_nondet "$cold/jax_b" "$DET"
      one det_fresh "$cold/jax_c" "$DET"
    fi
  done
fi
if [ "$part" = train_graphs ]; then  # the 1-GPU train step with its convolutions in CUDA graphs, or not
  # ROUNDS alternating processes (default 2) with the deterministic flag, then one each with XLA's default kernels:
  # cold compile, ms per step (queued) and digests of the state after two steps (bit-for-bit repeats)
  export YOLOJAX_XLA_FLAGS=0; unset JAX_COMPILATION_CACHE_DIR  # exactly the flags named here; no cache: cold
  DET="--xla_gpu_exclude_nondeterministic_ops=true" GRAPHS="--xla_gpu_enable_command_buffer=+CONVOLUTION"
  one() { XLA_FLAGS="$2" timeout 300 python3 $S/bench_conv_tuning.py --child --scale "${SCALE:-n}" \
    | tail -n 1 > "$out/train_graphs_$1.json"; echo "== $1: $(cat "$out/train_graphs_$1.json")"; }
  for round in $(seq "${ROUNDS:-2}"); do one "det_r$round" "$DET"; one "det_graphs_r$round" "$DET $GRAPHS"; done
  [ "${DEFAULT_KERNELS:-1}" = 1 ] && { one default ""; one default_graphs "$GRAPHS"; }
fi
if [ "$part" = conv_tuning ]; then
  T=590 N=30 run python3 $S/bench_conv_tuning.py --scale "${SCALE:-n}" --rounds "${ROUNDS:-2}" \
    --out "$out/conv_tuning_${SCALE:-n}.json"
fi
if [ "$part" = hsv ]; then
  T=90 run python3 $S/check_device_hsv.py
  T=150 run python3 $S/bench_data.py --cache ram --repeats 1 --images 256 --out "$out/data"
  T=150 run python3 $S/bench_data.py --cache ram --repeats 1 --images 256 --hsv-on-device --out "$out/data"
fi
if [ "$part" = feed ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  e2e=(--images 1536 --batches 20 --hsv-on-device true --deterministic --settle 5)
  T=300 run python3 $S/bench_e2e.py --workers 14 --cache ram --feeds --warp-on-device true "${e2e[@]}" \
    --out "$out/feed_ram14"
  T=200 run python3 $S/bench_e2e.py --workers 6 --cache ram --warp-on-device true "${e2e[@]}" --out "$out/feed_ram6"
  T=200 run python3 $S/bench_e2e.py --workers 12 --warp-on-device true "${e2e[@]}" --out "$out/feed_none12"
  T=200 run python3 $S/bench_e2e.py --workers 14 --cache ram --warp-on-device false "${e2e[@]}" \
    --out "$out/feed_cpu_ram14"
  T=240 run python3 $S/bench_e2e.py --scale s --workers 14 --cache ram --warp-on-device true "${e2e[@]}" \
    --out "$out/feed_s_ram14"
  T=300 run python3 $S/bench_e2e.py --workers 14 --cache ram --warp-on-device true "${e2e[@]}" \
    --variants direct1,direct4,plain2,direct2 --out "$out/feed_copy_ram14"
  T=150 run python3 $S/bench_e2e.py --workers 14 --worker-nice 10 --warp-on-device true "${e2e[@]}" \
    --variants direct2,staged2 --rounds 2 --out "$out/feed_none14_nice"
fi
if [ "$part" = loop ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  loop=(--workers 14 --images 3200 --data-dir /tmp/bench_images)
  T=140 run python3 $S/bench_loop.py "${loop[@]}" --epochs 4 --scale s --out "$out/loop_s_none14"
  T=90 run python3 $S/bench_loop.py "${loop[@]}" --epochs 4 --copy-threads 2 --depth 3 --out "$out/loop_n_none14_t2"
  T=150 run python3 $S/bench_loop.py "${loop[@]}" --epochs 4 --worker-nice 10 --out "$out/loop_n_none14_nice10"
  T=240 run python3 $S/bench_loop.py "${loop[@]}" --epochs 4 --cache disk --out "$out/loop_n_disk14_first"
  T=120 run python3 $S/bench_loop.py "${loop[@]}" --epochs 6 --cache disk --out "$out/loop_n_disk14"
fi
if [ "$part" = cli ]; then
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=300 N=12 run python3 -m yolojax.cli train batch=64 nbs=64 workers=8 epochs=4 mosaic=1.0 time=0.1 \
    project=/tmp/runs name=gpu
  cp /tmp/runs/gpu/results.csv /tmp/runs/gpu/args.yaml "$out/" 2>/dev/null
fi
if [[ "$part" = multi* ]]; then  # compiled programs and autotuning results carried between calls in .jaxcache/
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  [ -f .jaxcache/jaxcache.tar ] && tar xf .jaxcache/jaxcache.tar -C /tmp
fi
if [ "$part" = multi ]; then
  ngpu=$(nvidia-smi -L | wc -l)
  T=330 run python3 $S/bench_scaling.py --scales n --out "$out/scaling_n.json"
  T=150 run python3 -m torch.distributed.run --nproc_per_node "$ngpu" $S/bench_ddp_reference.py --scales n,s \
    --out "$out/ddp_reference.json"
  T=100 run python3 $S/bench_ddp_reference.py --scales n,s --out "$out/single_reference.json"
  T=90 run python3 $S/profile_gpu.py infer --batch 1 --calls 3  # the inference flags with several GPUs present
fi
if [ "$part" = multi_s ]; then
  T=150 run python3 $S/bench_scaling.py --scales n --calls 3 --out "$out/scaling_n.json"
  T=240 run python3 $S/bench_scaling.py --scales s --exchanges flat,none --calls 3 --out "$out/scaling_s.json"
  CUDA_VISIBLE_DEVICES=0 T=150 run python3 $S/bench_loop.py --batch 64 --images 2560 --epochs 4 --cache ram \
    --data-dir /tmp/loop_images --out "$out/loop_one_gpu"
fi
if [ "$part" = multi_proc ]; then  # one process per GPU through jax.distributed, against one process for all
  ngpu=$(nvidia-smi -L | wc -l)
  T=150 run python3 $S/bench_scaling.py --scales n --exchanges flat --calls 3 --out "$out/scaling_n_one_process.json"
  for i in $(seq 0 $((ngpu - 1))); do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      timeout 240 python3 $S/bench_scaling.py --scales n --exchanges flat --calls 3 \
      --out "$out/scaling_n_processes.json" > "/tmp/proc$i.log" 2>&1 &
  done
  wait; grep -v cuda_timer /tmp/proc0.log | tail -n 6; tail -n 3 /tmp/proc1.log
fi
if [ "$part" = multi_launch ]; then  # the train job's layout (one process per GPU, `yolojax train`'s default) with the
  # train default's deterministic step, v8n and v8s (SCALES), against one GPU of the same machine. CORES=k pins each
  # process (the one-GPU run too) to k CPU cores of its own: a slow or small host. DET=0: XLA's default kernels (the
  # compile then autotunes, over a minute)
  ngpu=$(nvidia-smi -L | wc -l)
  sc=(--scales "${SCALES:-n,s}" --exchanges flat --calls 0)
  [ "${DET:-1}" = 0 ] || sc+=(--deterministic)
  pin() { [ -z "${CORES:-}" ] || echo "taskset -c $(($1 * CORES))-$(($1 * CORES + CORES - 1))"; }
  tag=${CORES:+_cores$CORES}${DET:+_det$DET}
  T=240 N=12 run $(pin 0) python3 $S/bench_scaling.py "${sc[@]}" --devices 1 --out "$out/scaling_det_1gpu$tag.json"
  for i in $(seq 0 $((ngpu - 1))); do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12359 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      $(pin "$i") timeout 280 python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det_processes$tag.json" \
      > "$out/launch_proc$i$tag.log" 2>&1 &
  done
  wait; grep -v -i "cuda_timer\|warn" "$out/launch_proc0$tag.log" | tail -n 12; tail -n 2 "$out/launch_proc1$tag.log"
fi
if [ "$part" = multi_tuned ]; then  # multi_launch (v8n, deterministic) before and after `yolojax autotune` (on GPU 0,
  # 64 images, into the cache folder the train job loads): the tuned convolutions on one GPU and one process per GPU
  rm -rf ~/.cache/yolojax/conv_autotune
  SCALES=n bash "$0" multi_launch "$out/untuned" > "$out/untuned.log" 2>&1
  CUDA_VISIBLE_DEVICES=0 T=300 run python3 -m yolojax.cli autotune scales=n batch=64
  SCALES=n bash "$0" multi_launch "$out/tuned" > "$out/tuned.log" 2>&1
  for v in untuned tuned; do grep -h '^{' "$out/$v/"*.json "$out/$v/launch_proc0.log" 2>/dev/null | cut -c1-400; done
  python3 -c "import json,glob; [print(f, json.load(open(f))[0]['ms_per_step']) for f in sorted(glob.glob('$out/*/scaling*.json'))]"
  rm -f "$out"/*/jaxcache.tar "$out"/*/launch_proc1.log
fi
if [ "$part" = multi_proc_cli ]; then  # `yolojax train` as one process per GPU (jax.distributed), 3 epochs
  ngpu=$(nvidia-smi -L | wc -l)
  data=$(shapes640)
  for i in $(seq 0 $((ngpu - 1))); do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12356 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      timeout 200 python3 -m yolojax.cli train cfg=none model=yolov8n data="$data" imgsz=640 epochs=3 close_mosaic=1 \
      cache=ram workers=$(( ($(nproc) - 4) / ngpu )) batch=$((64 * ngpu)) project=/tmp/runs plots=False name=procs \
      > "$out/procs_$i.log" 2>&1 &
  done
  wait; grep -E "^Training|^epoch|Results|rror" "$out/procs_0.log" | cut -c1-200; tail -n 2 "$out/procs_1.log"
  cp /tmp/runs/procs/results.csv "$out/procs.csv"; ls /tmp/runs/procs/weights
fi
if [ "$part" = multi_ram_cache ]; then  # the shared RAM cache on real GPUs: its files during the run, none after
  ngpu=$(nvidia-smi -L | wc -l)
  data=$(shapes640)
  export TMPDIR=/tmp/ram_cache_run; mkdir -p $TMPDIR; start=$(date +%s)
  timeout 240 python3 -m yolojax.cli train cfg=none model=yolov8n data="$data" imgsz=640 epochs=2 close_mosaic=1 \
    cache=ram workers=12 batch=$((64 * ngpu)) project=/tmp/runs plots=False \
    name=ram > "$out/ram.log" 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    echo "t=$(( $(date +%s) - start )) s: $(ls -s --block-size=M $TMPDIR | grep yolojax_ram_cache | tr '\n' ' ')|" \
      "used $(free -m | awk '/Mem/{print $3}') MiB" >> "$out/ram_cache_files.txt"; sleep 4
  done
  wait $pid; echo "exit $? after $(( $(date +%s) - start )) s; cache files left: $(ls $TMPDIR | grep -c yolojax_ram_cache)"
  grep -E "yolojax train:|^Training|rror" "$out/ram.log" | cut -c1-200; cp /tmp/runs/ram/results.csv "$out/ram.csv"
fi
if [ "$part" = multi_feed ]; then
  ngpu=$(nvidia-smi -L | wc -l)
  feed=(--batch $((64 * ngpu)) --images 2560 --cache ram --workers $(( $(nproc) - 4 )) --data-dir /tmp/loop_images)
  T=200 run python3 $S/bench_loop.py "${feed[@]}" --feed-only none,shard,per_device --out "$out/feed_c4"
  T=150 run python3 $S/bench_loop.py "${feed[@]}" --feed-only shard,per_device --copy-threads 8 --depth 6 \
    --out "$out/feed_c8"
  T=240 run python3 $S/bench_scaling.py --scales s --exchanges flat --calls 3 --out "$out/scaling_s.json"
  T=150 run python3 -m torch.distributed.run --nproc_per_node "$ngpu" $S/bench_ddp_reference.py --scales n,s \
    --out "$out/ddp_reference.json"
fi
if [ "$part" = multi_peer84 ]; then  # the strongest peer on all GPUs: 8.4.190 under torch.compile + DDP, and ours
  # (OURS=0: the peer alone)
  ngpu=$(nvidia-smi -L | wc -l)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site84 .whl84/*.whl
  T=420 PYTHONPATH=/tmp/site84:$PYTHONPATH run python3 -m torch.distributed.run --nproc_per_node "$ngpu" \
    $S/bench_ddp_reference.py --scales n --compile --out "$out/ddp_reference_84_compiled.json"
  [ "${OURS:-1}" = 0 ] || T=150 run python3 $S/bench_scaling.py --scales n --exchanges flat --calls 0 \
    --out "$out/scaling_n.json"
fi
if [ "$part" = multi_dispatch ]; then  # the deterministic v8n step on 1 and all GPUs: host dispatch, CUDA-graph flags
  ngpu=$(nvidia-smi -L | wc -l)
  sc=(--scales n --exchanges flat --calls 3 --deterministic)
  T=170 run python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=+CONVOLUTION" T=170 run python3 $S/bench_scaling.py "${sc[@]}" \
    --out "$out/scaling_det_graph_conv.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=+CONVOLUTION --xla_gpu_graph_min_graph_size=1" T=170 \
    run python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det_graph_conv_min1.json"
  for i in $(seq 0 $((ngpu - 1))); do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12357 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      timeout 120 python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det_processes.json" \
      > "/tmp/dproc$i.log" 2>&1 &
  done
  wait; grep -v cuda_timer /tmp/dproc0.log | tail -n 12
fi
if [ "$part" = multi_proc_graphs ]; then  # one process per GPU with CUDA graphs of the convolutions: host dispatch
  ngpu=$(nvidia-smi -L | wc -l)
  sc=(--scales n --exchanges flat --calls 3 --deterministic)
  for i in $(seq 0 $((ngpu - 1))); do
    XLA_FLAGS="--xla_gpu_enable_command_buffer=+CONVOLUTION ${GRAPH_FLAGS:-}" \
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12358 JAX_NUM_PROCESSES=$ngpu JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      timeout 150 python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det_processes_graph_conv.json" \
      > "/tmp/gproc$i.log" 2>&1 &
  done
  wait; grep -v cuda_timer /tmp/gproc0.log | tail -n 12; tail -n 3 /tmp/gproc1.log
fi
if [ "$part" = graphs ]; then  # CUDA graphs whose temporaries keep their addresses (no per-call graph update)
  skip="--xla_gpu_command_buffer_update_mode=SKIP_TEMP"
  ib=(--calls 5 --conf 0.25 --print-top 0)
  N=6 T=100 run python3 $S/profile_gpu.py infer "${ib[@]}" --out "$out/infer_b1.json"
  XLA_FLAGS="$skip" N=6 T=100 run python3 $S/profile_gpu.py infer "${ib[@]}" --out "$out/infer_b1_skip_temp.json"
  XLA_FLAGS="$skip" N=6 T=100 run python3 $S/profile_gpu.py infer "${ib[@]}" --batch 32 \
    --out "$out/infer_b32_skip_temp.json"
  sc=(--scales n --exchanges flat --calls 3 --deterministic --devices 1)
  N=12 T=150 run python3 $S/bench_scaling.py "${sc[@]}" --out "$out/scaling_det_1gpu.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=+CONVOLUTION $skip" N=12 T=150 run python3 $S/bench_scaling.py \
    "${sc[@]}" --out "$out/scaling_det_1gpu_graphs_skip_temp.json"
fi
if [ "$part" = compile ]; then  # cold compile of the deterministic v8n step (empty cache each) under compiler flags
  # BASE=<tree> compiles that tree's step too, before this tree's, ROUNDS times (default 1), with this tree's harness
  # (BASE="<tree> <tree> ..." several, each tagged by its folder's name); COMPILE_VARIANTS="tag:--flag=value ..." adds
  # flag sets; TRACE_COMPILE= (empty) times the compile without its trace
  export YOLOJAX_XLA_FLAGS=1 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  DET="--xla_gpu_exclude_nondeterministic_ops=true"
  for tree in ${BASE:-}; do cp $S/profile_gpu.py "$tree/benchmarks/scripts/"; done
  for round in $(seq "${ROUNDS:-1}"); do
    for dir in ${BASE:-} .; do
      for variant in "base:" ${COMPILE_VARIANTS:-}; do
        tag=${variant%%:*}
        name=${dir##*/}; name=${name#.}
        [ -n "${BASE:-}" ] && tag="${tag}_$([ "$dir" = . ] && echo this || echo "$name")_r$round"
        export JAX_COMPILATION_CACHE_DIR=$cold/jc_compile_$tag
        # VMODULE=gpu_compiler=1 (say) keeps XLA's own phase timers of each compile in compile_log_<tag>.txt
        flags=${variant#*:}  # commas separate a variant's flags
        (cd "$dir" && XLA_FLAGS="$DET ${flags//,/ }" TF_CPP_MIN_LOG_LEVEL=${VMODULE:+0} TF_CPP_VMODULE=${VMODULE:-} \
          timeout 150 python3 benchmarks/scripts/profile_gpu.py train --calls 2 --print-top 0 ${TRACE_COMPILE---trace-compile} \
          --tag "cold_det_$tag" --out "$out/cold_det_$tag.json" > "$out/compile_log_$tag.txt" 2>&1)
        echo "== $tag"; grep -v -i warn "$out/compile_log_$tag.txt" | grep -E "compile|ms per step|for jit_local_step" \
          | tail -n 4
      done
    done
  done
fi
if [ "$part" = infer_variables ]; then  # inference with the weights per array / one flat buffer / program constants /
  # BatchNorm folded / folded with OHWI kernels (VARIANTS, BATCHES); a run that hangs prints its stack at DUMP_AFTER s
  for v in ${VARIANTS:-tree flat constant folded prepared}; do
    for b in ${BATCHES:-1 32}; do
      N=${N:-3} T=${T:-100} run python3 $S/profile_gpu.py infer --calls 5 --conf 0.25 --print-top 0 --batch $b \
        --variables $v --dump-after "${DUMP_AFTER:-0}" --out "$out/infer_b${b}_$v.json"
    done
  done
fi
if [ "$part" = infer_blocks ]; then  # inference over pixel blocks by batch size: BASE=<tree> first, then this tree
  # with them from batch 1 on and never, alternating; then a batch-1 and a batch-32 profile of the folded forward
  bi=(--no-reference --batches 1 8 32 --rounds 5)
  lb=yolojax.models.layers.BLOCKS_MIN_INFERENCE_BATCH
  [ -n "${BASE:-}" ] && (cd "$BASE" && T=200 N=4 run python3 benchmarks/scripts/bench_infer.py "${bi[@]}" \
    --out "$out/blocks_base")
  for min in 1 100000; do
    T=200 N=4 run python3 $S/bench_infer.py "${bi[@]}" --patch "$lb=$min" --out "$out/blocks_min$min"
  done
  for b in 1 32; do
    N=6 T=100 run python3 $S/profile_gpu.py infer --calls 5 --conf 0.25 --print-top 0 --variables prepared \
      --batch $b --out "$out/profile_b$b.json"
  done
fi
if [ "$part" = infer_overhead ]; then  # where batch-1 inference's time goes besides the GPU's: the folded forward +
  # NMS (about 300 candidates per image) with the inference flags, without CUDA graphs, with XLA's graph types only;
  # each run also times a program that only reads its arguments and the NMS alone (traced too); then batch 32
  io=(--calls 3 --candidates 300 --print-top 0 --variables prepared)
  N=3 T=100 run python3 $S/profile_gpu.py infer "${io[@]}" --batch 1 --out "$out/overhead_b1_default.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=" N=3 T=100 run python3 $S/profile_gpu.py infer "${io[@]}" --batch 1 \
    --out "$out/overhead_b1_no_graphs.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN" N=3 T=100 run python3 \
    $S/profile_gpu.py infer "${io[@]}" --batch 1 --out "$out/overhead_b1_xla_types.json"
  N=3 T=100 run python3 $S/profile_gpu.py infer "${io[@]}" --batch 32 --out "$out/overhead_b32_default.json"
fi
if [ "$part" = infer_packed ]; then  # the folded variables one argument per array against packed in one buffer per
  # dtype: profiles at batch 1 and 32 (about 300 candidates per image), then bench_infer, alternating
  io=(--calls 3 --candidates 300 --print-top 0)
  for b in 1 32; do for v in prepared packed; do
    N=3 T=120 run python3 $S/profile_gpu.py infer "${io[@]}" --variables $v --batch $b --out "$out/${v}_b$b.json"
  done; done
  for r in 1 2; do for v in folded packed; do
    T=150 N=4 run python3 $S/bench_infer.py --no-reference --batches 1 32 --variables $v --out "$out/bench_${v}_r$r"
  done; done
fi
if [ "$part" = infer ]; then  # forward + NMS at batch 1 and 32, the older tree (BASE) first; then the NMS kept-count
  # check and the peers (each bench_infer run times ours and the installed reference in the same process)
  ib=(--calls 5 --candidates 300 --print-top 0 --variables packed)
  for b in 1 32; do  # (an older tree's profile_gpu may lack those options: its plain variables, conf 0.25)
    [ -n "${BASE:-}" ] && (cd "$BASE" && N=4 T=100 run python3 benchmarks/scripts/profile_gpu.py infer --calls 5 \
      --conf 0.25 --print-top 0 --batch $b --out "$out/base_infer_b$b.json")
    N=4 T=100 run python3 $S/profile_gpu.py infer "${ib[@]}" --batch $b --out "$out/infer_b$b.json"
  done
  T=150 N=12 run python3 $S/check_inference_variables.py --out "$out/check_default.json"
  [ -n "${BASE:-}" ] && (cd "$BASE" && T=150 N=8 run python3 benchmarks/scripts/bench_infer.py --out "$out/base_82")
  T=150 N=8 run python3 $S/bench_infer.py --out "$out/infer_82"
  if ls .whl84/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site84 .whl84/*.whl
    T=150 N=8 PYTHONPATH=/tmp/site84:$PYTHONPATH run python3 $S/bench_infer.py --out "$out/infer_84"
  fi
fi
if [ "$part" = queued_ab ]; then  # is a queued-time difference real? the fastest of 6 rounds, three processes a side
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  cp $S/profile_gpu.py "$BASE/benchmarks/scripts/"  # this tree's harness, BASE's code under test
  for i in $(seq "${ROUNDS:-3}"); do  # ROUNDS alternations (default 3); SCALE (default n)
    for dir in "$BASE" .; do
      (cd "$dir" && JAX_COMPILATION_CACHE_DIR=$cold/jq_${dir//[\/.]/_} N=2 T=200 run python3 \
        benchmarks/scripts/profile_gpu.py train --scale "${SCALE:-n}" --calls 1 --print-top 0 --queued-rounds 6 --tag "$dir" \
        --out "$out/queued_${i}_${dir//[\/.]/_}.json")
    done
  done
fi
if [ "$part" = infer_processes ]; then  # inference (the inference job's flags, convolutions in CUDA graphs) in
  # ROUNDS fresh processes (default 2; about a minute each with the profile) at batch 1 and 32, packed weights as
  # predict runs them: does any process fail (XLA's autotuned convolutions differ between processes; one that cannot
  # be captured in a graph ends a run)?
  for round in $(seq "${ROUNDS:-2}"); do for b in 1 32; do
    timeout 120 python3 $S/profile_gpu.py infer --batch $b --variables packed --calls 3 --conf 0.25 \
      --out "$out/infer_b${b}_r$round.json" > "$out/infer_b${b}_r$round.log" 2>&1
    echo "batch $b round $round rc=$? $(grep -c -i 'failed to trace\|CUDNN_STATUS' "$out/infer_b${b}_r$round.log") error lines"
  done; done
fi
if [ "$part" = infer_check ]; then  # folded against plain variables and NMS kept counts over repeated calls, per
  # command-buffer flag set (the default inference flags first)
  T=150 N=12 run python3 $S/check_inference_variables.py --out "$out/check_default.json"
  G="--xla_gpu_graph_min_graph_size=1"
  for f in +CONVOLUTION,+WHILE +CONVOLUTION,+CONDITIONAL; do
    YOLOJAX_XLA_FLAGS=0 XLA_FLAGS="--xla_gpu_enable_command_buffer=$f $G" T=150 N=12 run python3 \
      $S/check_inference_variables.py --batches 1 --out "$out/check_${f//[+,]/_}.json"
  done
fi
if [ "$part" = val_check ]; then  # in-training validation's flags against predict / val's and the CPU's
  export JAX_COMPILATION_CACHE_DIR=/tmp/jc_val
  T=200 N=4 run python3 -m yolojax.cli train project=/tmp/val_runs
  T=400 N=8 run python3 $S/check_val_flags.py /tmp/val_runs/shapes/weights/best --out "$out/val_flags.json"
  cp /tmp/val_runs/shapes/results.csv "$out/val_check_train.csv"
  # predict with the compile cache the training filled (once seen failing in cuDNN, status 5003)
  T=120 N=4 run python3 -m yolojax.cli predict "$(ls -d ~/.cache/yolojax/shapes-*/images/val | head -n 1)" \
    weights=/tmp/val_runs/shapes/weights/best conf=0.25 save_txt=true project=/tmp/val_runs name=pred
fi
if [ "$part" = norm ]; then  # the BatchNorm + SiLU layers alone, per activation shape
  # LARGEST=k: only the k largest shapes; DUMP=1: XLA's priority-fusion pass of the timed backward variants (their
  # jitted functions are named `backward`) dumped to OUT/dump, with its fusion decisions
  [ "${DUMP:-0}" = 1 ] && export XLA_FLAGS="${XLA_FLAGS:-} --xla_dump_to=$out/dump \
    --xla_dump_hlo_pass_re=priority-fusion --xla_dump_hlo_module_re=backward"
  T=${T:-300} N=20 run python3 $S/bench_norm.py ${VARIANTS:+--variants "$VARIANTS"} ${LARGEST:+--largest "$LARGEST"} \
    --out "$out/norm.json"
fi
if [ "$part" = recipe ]; then  # the shapes recipe under each compute / augmentation setting, final mAP each
  export JAX_COMPILATION_CACHE_DIR=/tmp/jc_recipe
  recipe() {  # NAME KEY=VALUE...
    local name=$1; shift
    T=300 N=3 run python3 -m yolojax.cli train project=/tmp/recipe name="$name" "$@"
    cp "/tmp/recipe/$name/results.csv" "$out/recipe_$name.csv"
  }
  recipe f32 amp=false
  recipe host_aug hsv_on_device=false warp_on_device=false
  recipe f32_host_aug amp=false hsv_on_device=false warp_on_device=false
  export JAX_PLATFORMS=cpu; recipe cpu; unset JAX_PLATFORMS
fi
if [ "$part" = wgrad ]; then  # cuDNN's weight gradients against products over shifted views, per layer shape
  [ "${WGRAD:-1}" = 0 ] || T=${T:-300} N=30 run python3 $S/bench_wgrad.py --out "$out/wgrad.json"
  [ "${WGRAD:-1}" = 0 ] || XLA_FLAGS=--xla_gpu_exclude_nondeterministic_ops=true T=${T:-300} N=30 run \
    python3 $S/bench_wgrad.py --out "$out/wgrad_det.json"
  T=${T:-300} N=30 run python3 $S/bench_wgrad.py --blocks "${BLOCKS:-64}" --out "$out/blocks.json"
fi
if [ "$part" = multi_loop ]; then  # the train loop's busy share on all GPUs, 4 against 8 copy threads
  ngpu=$(nvidia-smi -L | wc -l)
  feed=(--batch $((64 * ngpu)) --images 2560 --cache ram --workers $(( $(nproc) - 4 )) --data-dir /tmp/loop_images)
  T=200 run python3 $S/bench_loop.py "${feed[@]}" --epochs 4 --copy-threads 4 --depth 4 --out "$out/loop_c4"
  T=200 run python3 $S/bench_loop.py "${feed[@]}" --epochs 4 --copy-threads 8 --depth 6 --out "$out/loop_c8"
  T=150 run python3 $S/bench_scaling.py --scales n --exchanges flat --calls 3 --out "$out/scaling_n.json"
fi
if [ "$part" = peers ]; then  # ours, ultralytics 8.2.103 eager (train step and inference)
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
  T=300 run python3 -m yolojax.cli bench scales=n,s compile_cache=/tmp/jaxcache out="$out/peers_ours_82"
  T=100 run python3 $S/bench_infer.py --out "$out/infer_82"
fi
if [ "$part" = peers84 ]; then  # ultralytics 8.4.190 eager and under torch.compile; inference against ours
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site84 .whl84/*.whl
  T=480 N=12 PYTHONPATH=/tmp/site84:$PYTHONPATH run python3 -m yolojax.cli bench scales=${SCALES:-n,s} ours=false \
    reference_compile=true out="$out/peers_84"
  T=100 PYTHONPATH=/tmp/site84:$PYTHONPATH run python3 $S/bench_infer.py --out "$out/infer_84"
fi
if [ "$part" = export ]; then  # ONNX Runtime on the host's CPU cores (the CUDA provider's wheel does not travel)
  T=240 run python3 $S/bench_export.py --device cpu --iters 30 --warmup 5 --out "$out/export_cpu.json"
fi
if [ "$part" = multi_cli ]; then
  T=580 run bash $S/multi_gpu_train.sh "$out"
fi
if [[ "$part" = multi* && "$part" != multi_tuned ]]; then
  tar cf "$out/jaxcache.tar" -C /tmp jaxcache; ls -la "$out/jaxcache.tar"
elif [[ " train ops e2e all " = *" $part "* ]]; then
  tar czf "$out/benchmarks_$part.tgz" benchmarks
fi

#!/usr/bin/env bash
# Device call (session 4): the train loop (one worker pool per run, gc settled between epochs) with 2 and 4 copy
# threads, JPEG decode and RAM cache. JSON results to $OUT/threads/.
set -uo pipefail
final=${OUT:-/tmp/out}/threads; mkdir -p "$final"
out=/tmp/logs; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
common="--workers 14 --images 3200 --epochs 4 --data-dir /tmp/bench_images"
N=1 run_logged t2 230 python3 scripts/bench_loop.py $common --out "$final/loop_n_none14_t2"
N=1 run_logged t4 110 python3 scripts/bench_loop.py $common --copy-threads 4 --depth 4 --out "$final/loop_n_none14_t4"
N=1 run_logged ram_t4 120 python3 scripts/bench_loop.py $common --cache ram --copy-threads 4 --depth 4 --out "$final/loop_n_ram14_t4"
N=1 run_logged ram_t2 120 python3 scripts/bench_loop.py $common --cache ram --out "$final/loop_n_ram14_t2"
for f in "$final"/*.json; do python3 -c "
import json; d=json.load(open('$f')); e=d['epochs_detail']
print('$f'.split('/')[-1], round(d['resident_ms_per_step'],1), [round(x['steady_ms_per_step'],1) for x in e], [[round(v,1) for v in x['interval_ms_p10_p50_p90_max']] + [x['slowest_step']] for x in e], [round(x.get('gap_ms',0)) for x in e], d['gc_gen2_collections'], round(d['gc_gen2_pause_ms_total']), round(d['busy_share_after_epoch1_with_gaps'],3))"; done

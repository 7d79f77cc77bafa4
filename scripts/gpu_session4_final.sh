#!/usr/bin/env bash
# Device call (session 4, final): the train loop with its defaults (4 copy threads, depth 4, one worker pool per
# run, gc settled between epochs): v8n JPEG decode (twice, 6 epochs), RAM cache, v8s JPEG; 2 copy threads again.
# JSON results to $OUT/final/.
set -uo pipefail
final=${OUT:-/tmp/out}/final; mkdir -p "$final"
out=/tmp/logs; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
common="--workers 14 --images 3200 --data-dir /tmp/bench_images"
N=0 run_logged n_none 230 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_none14"
N=0 run_logged n_ram 100 python3 scripts/bench_loop.py $common --epochs 4 --cache ram --out "$final/loop_n_ram14"
N=0 run_logged s_none 140 python3 scripts/bench_loop.py $common --epochs 4 --scale s --out "$final/loop_s_none14"
N=0 run_logged n_none_b 90 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_none14_b"
N=0 run_logged n_none_t2 90 python3 scripts/bench_loop.py $common --epochs 4 --copy-threads 2 --depth 3 --out "$final/loop_n_none14_t2"
for f in "$final"/*.json; do python3 -c "
import json; d=json.load(open('$f')); e=d['epochs_detail']
print('$f'.split('/')[-1], round(d['resident_ms_per_step'],1), [round(x['steady_ms_per_step'],1) for x in e], [[round(v,1) for v in x['interval_ms_p10_p50_p90_max']] for x in e], [round(x.get('gap_ms',0)) for x in e], round(d['busy_share_after_epoch1_with_gaps'],3))"; done

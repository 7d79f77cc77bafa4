#!/usr/bin/env bash
# Device call (session 4): the train loop with cache=disk (the reference's .npy beside each image): the first run
# writes the .npy files during its first epoch, the second reads them throughout. JSON results to $OUT/disk/.
set -uo pipefail
final=${OUT:-/tmp/out}/disk; mkdir -p "$final"
out=/tmp/logs; mkdir -p "$out"
source scripts/gpu_env.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
common="--workers 14 --images 3200 --data-dir /tmp/bench_images --cache disk"
N=0 run_logged disk1 240 python3 scripts/bench_loop.py $common --epochs 4 --out "$final/loop_n_disk14_first"
N=0 run_logged disk2 120 python3 scripts/bench_loop.py $common --epochs 6 --out "$final/loop_n_disk14"
for f in "$final"/*.json; do python3 -c "
import json; d=json.load(open('$f')); e=d['epochs_detail']
print('$f'.split('/')[-1], round(d['resident_ms_per_step'],1), [round(x['steady_ms_per_step'],1) for x in e], [[round(v,1) for v in x['interval_ms_p10_p50_p90_max']] for x in e], [round(x.get('gap_ms',0)) for x in e], round(d['busy_share_after_epoch1_with_gaps'],3))"; done

#!/usr/bin/env bash
# Device call (session 4): ways of feeding the step (direct from the workers' shared memory, waiting for the copy on
# the copy thread, HostStaging's reused buffers, madvise populate), round-robin over fresh epochs, JPEG decode and
# RAM cache, and the workers niced. JSON results to $OUT/feed/ (logs stay on the machine).
set -uo pipefail
source scripts/gpu_env.sh
results_dir feed
common="--images 1536 --batches 20 --hsv-on-device true --warp-on-device true --deterministic --settle 3"
N=12 run_logged none14 200 python3 scripts/bench_e2e.py --workers 14 $common --variants direct2,ready2,staged2,populate2 --rounds 2 --out "$final/none14"
N=12 run_logged ram14 200 python3 scripts/bench_e2e.py --workers 14 --cache ram $common --variants direct2,ready2,staged2,populate2 --rounds 2 --out "$final/ram14"
N=8 run_logged none14_nice 150 python3 scripts/bench_e2e.py --workers 14 --worker-nice 10 $common --variants direct2,staged2 --rounds 2 --out "$final/none14_nice"
rm -f "$final"/*.md

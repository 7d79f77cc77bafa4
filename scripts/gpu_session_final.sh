#!/usr/bin/env bash
# Device call: the numbers for the README — e2e pipeline-fed training (deterministic mode), the train step in
# deterministic mode vs the reference, inference with the default XLA flags vs the reference. Results to $OUT/final/.
set -uo pipefail
out=${OUT:-/tmp/out}/final; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
python3 -c "
import numpy as np, pathlib
if not hasattr(np, 'trapz'): pathlib.Path('/tmp/site/sitecustomize.py').write_text('import numpy as np\nif not hasattr(np, \"trapz\"): np.trapz = np.trapezoid\n')"
nvidia-smi --query-gpu=name --format=csv,noheader
r() { tag=$1; t=$2; shift 2; echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"; grep -v -iE "warn|leaked|cuda_timer|param_grad" "$out/$tag.log" | tail -n ${N:-4}; }
r e2e_det 200 python3 scripts/bench_e2e.py --workers 14 --images 1024 --batches 12 --hsv-on-device true --deterministic --out "$out/e2e_n_det"
N=6 r train_det 220 python3 scripts/bench_train.py --scales n --max-boxes 16 --deterministic --out "$out/train_step_det"
N=6 r infer 130 python3 scripts/bench_infer.py --out "$out/infer"

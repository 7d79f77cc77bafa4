#!/usr/bin/env bash
# Device call: device-HSV exactness + cost on the GPU, data pipeline per core (CPU-only vs HSV on device),
# end-to-end pipeline-fed training throughput. Results to $OUT/e2e/.
set -uo pipefail
out=${OUT:-/tmp/out}/e2e; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
python3 -c "
import numpy as np, pathlib
if not hasattr(np, 'trapz'): pathlib.Path('/tmp/site/sitecustomize.py').write_text('import numpy as np\nif not hasattr(np, \"trapz\"): np.trapz = np.trapezoid\n')"
nvidia-smi --query-gpu=name --format=csv,noheader; nproc
r() { tag=$1; t=$2; shift 2; echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"; grep -v -iE "warn|leaked" "$out/$tag.log" | tail -n 6; }
r hsv_check 90 python3 scripts/check_device_hsv.py
r data_cpu 150 python3 scripts/bench_data.py --cache ram --repeats 1 --images 256 --out "$out/data"
r data_hsvdev 150 python3 scripts/bench_data.py --cache ram --repeats 1 --images 256 --hsv-on-device --out "$out/data"
r e2e_n 250 python3 scripts/bench_e2e.py --workers 14 --images 1024 --batches 20 --hsv-on-device true --out "$out/e2e_n"

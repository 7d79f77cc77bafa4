# Sourced by the scripts/gpu_session_*.sh device scripts: install the carried wheels (.whl/), set the environment,
# print the card, and define `run_logged TAG TIMEOUT CMD...` (log to $out/TAG.log, print its last $N lines) and
# `results_dir NAME` ($final = $OUT/NAME for the JSON files that come back, $out = /tmp/logs, the compile cache).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
python3 -c "
import numpy as np, pathlib
if not hasattr(np, 'trapz'):  # ultralytics 8.2.103 calls np.trapz (numpy >= 2.4 removed it)
    pathlib.Path('/tmp/site/sitecustomize.py').write_text('import numpy as np\nif not hasattr(np, \"trapz\"): np.trapz = np.trapezoid\n')"
nvidia-smi --query-gpu=name --format=csv,noheader
run_logged() {
  local tag=$1 t=$2; shift 2
  echo "== $tag"; timeout "$t" "$@" > "$out/$tag.log" 2>&1; echo "rc=$?"
  grep -v -iE "warn|leaked|cuda_timer|param_grad" "$out/$tag.log" | tail -n "${N:-4}"
}
results_dir() {
  final=${OUT:-/tmp/out}/$1; mkdir -p "$final"
  out=/tmp/logs; mkdir -p "$out"
  export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
}

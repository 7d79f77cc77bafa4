# Sourced by run_gpu_benchmarks.sh on the GPU machine, from the repository root: install the carried wheels (.whl/,
# listed in wheels.txt), set the environment, and print the card.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=True YOLO_VERBOSE=False PYTHONUNBUFFERED=1
python3 -c "
import numpy as np, pathlib
if not hasattr(np, 'trapz'):  # ultralytics 8.2.103 calls np.trapz (numpy >= 2.4 removed it)
    pathlib.Path('/tmp/site/sitecustomize.py').write_text('import numpy as np\nif not hasattr(np, \"trapz\"): np.trapz = np.trapezoid\n')"
nvidia-smi --query-gpu=name --format=csv,noheader
# The multi-GPU runs' dataset: 2,560 train and 256 val shapes images at 640 px, generated once; prints its yaml.
shapes640() {
  python3 -m yolojax.cli data shapes root=/tmp/shapes640 num_train=2560 num_val=256 imgsz=640 workers="$(nproc)" \
    | tail -n 1
}
export -f shapes640  # multi_gpu_train.sh runs in a child shell

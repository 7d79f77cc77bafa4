"""Validate one set of weights under each XLA flag set the library uses on a GPU, each in its own process, and
compare mAP: the train job's flags (`deterministic`: --xla_gpu_exclude_nondeterministic_ops, as validation inside
training runs), the inference job's (predict, val) and the CPU backend's.

    python benchmarks/scripts/check_val_flags.py WEIGHTS [--data shapes] [--out FILE.json]

Each variant: `yolojax.eval.val.evaluate` of the weights in bf16 (the train dtype) and float32 (the standalone val's).
Within rounding, every row should give the same mAP.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {  # name: (environment, dtype)
    "train flags, bf16": ({"YOLOJAX_XLA_FLAGS": "0", "XLA_FLAGS": "--xla_gpu_exclude_nondeterministic_ops=true"},
                          "bfloat16"),
    "inference flags, bf16": ({}, "bfloat16"),
    "inference flags, float32": ({}, "float32"),
    "cpu, float32": ({"JAX_PLATFORMS": "cpu"}, "float32"),
}


def evaluate_once(weights: str, data: str, dtype: str) -> dict:
    """mAP of `weights` on `data`'s val split in this process (its XLA flags set by the caller's environment)."""
    from yolojax.xla_flags import apply_default_xla_flags

    apply_default_xla_flags(job="infer")
    import jax
    import jax.numpy as jnp

    from yolojax.convert.files import read_weights
    from yolojax.data import build_dataset
    from yolojax.detectors import task_from_weights_meta
    from yolojax.eval.val import evaluate

    variables, meta = read_weights(weights)
    task = task_from_weights_meta(meta, dtype=jnp.dtype(dtype))
    cfg = dict(data=data, imgsz=int(meta.get("imgsz") or 640), batch=32, workers=8, rect=False)
    result = evaluate(task, variables, build_dataset(cfg, "val", 0))
    return {"device": jax.devices()[0].device_kind, "map50": float(result["map50"]),
            "map50_95": float(result["map50_95"]), "detections": int(result["detections"])}


def _python_path() -> str:
    """The repository first, then the caller's path (the GPU machine's carried wheels live there)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--out", default="")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # a child process: one variant's dtype
    args = parser.parse_args()
    if args.one:
        print(json.dumps(evaluate_once(args.weights, args.data, args.one)))
        return
    rows = []
    for name, (environ, dtype) in VARIANTS.items():
        child = subprocess.run([sys.executable, __file__, args.weights, "--data", args.data, "--one", dtype],
                               env={**os.environ, **environ, "PYTHONPATH": _python_path()}, capture_output=True,
                               text=True, timeout=300)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        row = {"variant": name, **(json.loads(lines[-1]) if lines else {"error": child.stderr[-400:]})}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Time saving and restoring the whole training state (orbax, `yolojax.train.checkpoints`) of a fresh run.

The state of `initial_state` (SGD) for a YOLOv8 scale, saved `--repeats` times into a temporary folder and read back
each time; prints and optionally writes the seconds of every save and restore and the state's array count.

    python benchmarks/scripts/bench_checkpoint.py --scale n --out /tmp/checkpoint.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from yolojax.bench.train_step import sgd_plan  # noqa: E402
from yolojax.detectors import YOLOv8Task  # noqa: E402
from yolojax.train import checkpoints as ckpt  # noqa: E402
from yolojax.train.setup import initial_state  # noqa: E402


def time_checkpoints(scale: str, repeats: int) -> dict:
    task = YOLOv8Task(scale=scale, num_classes=80, dtype=jnp.float32)
    state, _ = initial_state(task, sgd_plan(2), (64, 64))
    directory = tempfile.mkdtemp()
    manager = ckpt.open_manager(directory)
    saves, restores = [], []
    for step in range(repeats):
        start = time.perf_counter()
        ckpt.save_checkpoint(manager, state, {"epoch": step}, step=step)
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        ckpt.restore_checkpoint(ckpt.open_manager(directory), state, step)
        restores.append(time.perf_counter() - start)
    return {"scale": scale, "arrays": len(jax.tree.leaves(state)), "save_s": saves, "restore_s": restores,
            "device": jax.devices()[0].device_kind}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = time_checkpoints(args.scale, args.repeats)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""On the accelerator: batches rendered by `warp_on_device` equal the CPU pipeline's (OpenCV) batches, and what the
render costs.

Builds the same training batches twice from generated 640 px JPEGs, once with the Mosaic + RandomPerspective pixels
made by OpenCV on the CPU and once left to `finish_augmentation` on JAX's default backend (batch 16, so both modes
draw mosaic partners from the same 16 samples), for mosaic and letterbox epochs, plain, with rotation + shear,
and with MixUp.

    python benchmarks/scripts/check_device_warp.py        # prints mismatch counts and ms per (64, 640, 640, 3) batch
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_data import AUG, write_images  # noqa: E402

from yolojax.bench.timing import median_ms  # noqa: E402
from yolojax.data import build_dataset  # noqa: E402
from yolojax.data.device.augment import WARP_PREFIX, finish_augmentation  # noqa: E402


def device_keys(batch):
    return {k: batch[k] for k in batch if k in ("images", "hsv_lut") or k.startswith(WARP_PREFIX)}


def compare(data_yaml, imgsz, batches, **aug):
    """(differing pixel values, values compared, label mismatches) over `batches` batches of both modes."""
    cfg = dict(AUG, data=str(data_yaml), imgsz=imgsz, batch=16, workers=0, albumentations=False, hsv_on_device=True,
               **aug)
    finish = jax.jit(finish_augmentation)
    diff = total = labels = 0
    for mosaic in (True, False):
        cpu = build_dataset(cfg, "train", seed=1).iterator(0, mosaic=mosaic)
        dev = build_dataset(dict(cfg, warp_on_device=True), "train", seed=1).iterator(0, mosaic=mosaic)
        for _, want, got in zip(range(batches), cpu, dev):
            labels += sum(int(not np.array_equal(want[k], got[k])) for k in ("bboxes", "cls", "mask"))
            a = np.asarray(finish(device_keys(want))["images"])
            b = np.asarray(finish(device_keys(got))["images"])
            diff += int(np.sum(a != b))
            total += a.size
    return diff, total, labels


def render_ms(data_yaml, imgsz):
    """Median ms of `finish_augmentation` (render + HSV) on one device-resident (64, s, s, 3) batch."""
    cfg = dict(AUG, data=str(data_yaml), imgsz=imgsz, batch=64, workers=0, albumentations=False, hsv_on_device=True,
               warp_on_device=True)
    batch = jax.device_put(device_keys(next(build_dataset(cfg, "train", seed=0).iterator(0))))
    finish = jax.jit(finish_augmentation)
    return median_ms(lambda: finish(batch), jax.block_until_ready, iters=20, warmup=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_images(Path(tmp), args.images, args.imgsz)
        result = {"device": jax.devices()[0].device_kind, "imgsz": args.imgsz}
        for name, aug in (("default", {}), ("rotate_shear", {"degrees": 10.0, "shear": 3.0, "flipud": 0.3}),
                          ("mixup", {"mixup": 0.5})):
            diff, total, labels = compare(data_yaml, args.imgsz, args.batches, **aug)
            result[name] = {"differing_values": diff, "values": total, "label_mismatches": labels}
            print(name, result[name], flush=True)
        result["finish_ms_per_b64"] = render_ms(data_yaml, args.imgsz)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""On the accelerator: `apply_hsv_luts` equals OpenCV on all 2^24 inputs of each conversion, and what it costs.

    python benchmarks/scripts/check_device_hsv.py        # prints mismatch counts and ms per (64, 640, 640, 3) batch
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from yolojax.bench.timing import median_ms  # noqa: E402
from yolojax.data.device.hsv import apply_hsv_luts, bgr_to_hsv_u8, hsv_to_rgb_u8  # noqa: E402
from yolojax.data.transforms import apply_hsv, hsv_tables, sample_hsv_gains  # noqa: E402


def every_triple() -> np.ndarray:
    """(4096, 4096, 3) uint8 holding each of the 2^24 byte triples once."""
    i = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([i & 255, (i >> 8) & 255, i >> 16], -1).astype(np.uint8).reshape(4096, 4096, 3)


def main() -> int:
    cv2.setNumThreads(1)
    grid = every_triple()
    to_hsv = int(np.sum(np.asarray(jax.jit(bgr_to_hsv_u8)(grid)) != cv2.cvtColor(grid, cv2.COLOR_BGR2HSV)))
    to_rgb = int(np.sum(np.asarray(jax.jit(hsv_to_rgb_u8)(grid)) != cv2.cvtColor(grid, cv2.COLOR_HSV2RGB)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 640, 640, 3), dtype=np.uint8)
    gains = [sample_hsv_gains(rng) for _ in range(64)]
    luts = np.stack([hsv_tables(g)[:, 0, :] for g in gains])
    fn = jax.jit(apply_hsv_luts)
    dev_images, dev_luts = jax.device_put(images), jax.device_put(luts)
    ours = np.asarray(fn(dev_images, dev_luts))
    batch_mismatch = sum(int(np.sum(ours[k] != apply_hsv(images[k], gains[k], to_rgb=True))) for k in range(8))
    ms = median_ms(lambda: fn(dev_images, dev_luts), jax.block_until_ready, 50, 5)
    print(json.dumps({"device": jax.devices()[0].device_kind, "bgr2hsv_mismatches_of_2^24": to_hsv,
                      "hsv2rgb_mismatches_of_2^24": to_rgb, "batch_mismatches_8_images": batch_mismatch,
                      "apply_hsv_luts_ms_b64_640": ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

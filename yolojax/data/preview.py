"""A grid of batch images with their boxes drawn (like the reference's train_batch0.jpg)."""
from __future__ import annotations

import math

import cv2
import jax
import numpy as np

from yolojax.data.device.augment import finish_augmentation
from yolojax.data.device.tables import WARP_PREFIX


def class_colour(c: int):
    """A stable, distinct RGB colour per class id."""
    hue = (c * 47) % 180
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def rgb_images(batch, max_images=16):
    """The batch's first `max_images` images as RGB (b, h, w, 3) uint8: a batch that left augmentation to the device
    (`hsv_lut`, `warp_*`: see yolojax.data.device.augment) is finished here, with JAX on the CPU."""

    if "hsv_lut" not in batch and not any(k.startswith(WARP_PREFIX) for k in batch):
        return batch["images"][:max_images]


    # every tile stays (a mosaic's tiles are other rows); only the first `max_images` outputs are rendered
    arrays = {k: v[:max_images] for k, v in batch.items() if k == "hsv_lut" or k.startswith(WARP_PREFIX)}
    tiles = batch["images"] if WARP_PREFIX + "slots" in batch else batch["images"][:max_images]
    with jax.default_device(jax.devices("cpu")[0]):
        images = jax.jit(finish_augmentation)({**arrays, "images": tiles})["images"]
    return np.array(images)[:max_images]  # writable: drawn on


def draw_batch_grid(batch, names=None, max_images=16):
    """Tile a batch's images into a square-ish grid and draw each valid box with its class name.

    Args:
      batch: dict with `images` (b, h, w, 3) uint8 RGB (or BGR with `hsv_lut`: see `rgb_images`), `bboxes`
        (b, m, 4) normalized xywh, `cls` (b, m), `mask`.
      names: class names (index = class id), or None for numbers.
      max_images: at most this many images are drawn.
    Returns:
      (rows * h, cols * w, 3) uint8 RGB.
    """
    images = rgb_images(batch, max_images)
    n, h, w = images.shape[:3]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * w, 3), 114, np.uint8)
    for i in range(n):
        tile = images[i].copy()  # drawn on: never the caller's pixels
        for (cx, cy, bw, bh), c in zip(batch["bboxes"][i][batch["mask"][i]], batch["cls"][i][batch["mask"][i]]):
            p1 = (int((cx - bw / 2) * w), int((cy - bh / 2) * h))
            p2 = (int((cx + bw / 2) * w), int((cy + bh / 2) * h))
            colour = class_colour(int(c))
            cv2.rectangle(tile, p1, p2, colour, 1)
            label = names[int(c)] if names is not None else str(int(c))
            cv2.putText(tile, label, (p1[0], max(p1[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1)
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = tile
    return grid

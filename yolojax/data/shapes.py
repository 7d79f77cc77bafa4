"""The embedded "shapes" detection dataset: procedural images of solid shapes, written in YOLO layout on demand.

Three classes — 0 rectangle, 1 ellipse, 2 triangle — with random sizes, aspect ratios, rotations (triangles),
colours, overlaps (limited, so every labelled object stays mostly visible), backgrounds (flat colour + linear
gradient) and pixel noise. Everything is a function of `seed`: image `i` of a split is drawn from its own generator
`np.random.default_rng([seed, split_id, i])`, so the data does not depend on the order or number of images.

Layout written (the reference's YOLO layout):

    root/shapes.yaml                   path, train, val, nc, names
    root/images/{train,val}/NNNNNN.png
    root/labels/{train,val}/NNNNNN.txt  rows `cls cx cy w h`, normalized to [0, 1]

`ensure_shapes_dataset()` generates once into a cache folder and returns the yaml path on later calls.
"""
from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from yolojax.cache import cache_root

CLASS_NAMES = ("rectangle", "ellipse", "triangle")
VERSION = 1
_DONE_MARKER = ".complete"


def _background(rng, h, w):
    """(h, w, 3) uint8 BGR: a flat colour plus a random linear gradient."""
    base = rng.uniform(0, 255, size=3)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xs / w - 0.5) * direction[0] + (ys / h - 0.5) * direction[1]
    amplitude = rng.uniform(-60, 60, size=3)
    image = base[None, None, :] + ramp[..., None] * amplitude[None, None, :]
    return np.clip(image, 0, 255).astype(np.uint8), base


def _contrasting_colour(rng, background_bgr):
    """A BGR colour at least ~100 grey levels (L2) away from the background's base colour."""
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background_bgr) > 100:
            return colour
    return 255 - background_bgr


def _shape_mask(rng, cls, h, w, size_range):
    """Draw one shape of class `cls` into a fresh (h, w) uint8 mask; returns the mask (0/1)."""
    mask = np.zeros((h, w), np.uint8)
    bw = rng.uniform(*size_range) * min(h, w)
    bh = bw * rng.uniform(0.5, 2.0)
    bh = min(bh, 0.9 * h)
    cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.05 * h, 0.95 * h)
    if cls == 0:
        cv2.rectangle(mask, (int(cx - bw / 2), int(cy - bh / 2)), (int(cx + bw / 2), int(cy + bh / 2)), 1, -1)
    elif cls == 1:
        cv2.ellipse(mask, (int(cx), int(cy)), (max(int(bw / 2), 2), max(int(bh / 2), 2)), 0, 0, 360, 1, -1)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        radius = max(bw, bh) / 2
        offsets = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, size=3)
        points = np.stack([cx + radius * np.cos(offsets), cy + radius * np.sin(offsets)], axis=-1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def _mask_box(mask):
    """Tight xyxy box (pixels, exclusive max) of a 0/1 mask, or None if the mask is (almost) empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def make_shapes_image(rng, *, imgsz=160, max_objects=6, size_range=(0.12, 0.45), noise_std=6.0):
    """One procedural image and its labels.

    Args:
      rng: np.random.Generator.
      imgsz: long side in pixels; the short side is drawn in [0.75, 1] * imgsz.
      max_objects: objects per image are uniform in [0, max_objects] (0 is rare but possible).
      size_range: object width as a fraction of the short side.
      noise_std: std of Gaussian pixel noise, grey levels.
    Returns:
      image: (h, w, 3) uint8 BGR.
      cls: (n,) int32 in [0, 3).
      boxes: (n, 4) float32 xyxy pixels, tight around each shape's pixels (before later shapes overlap it).
    """
    short = int(round(imgsz * rng.uniform(0.75, 1.0)))
    h, w = (imgsz, short) if rng.random() < 0.5 else (short, imgsz)
    image, base = _background(rng, h, w)
    classes, boxes, occupied = [], [], np.zeros((h, w), bool)
    for _ in range(int(rng.integers(0, max_objects + 1))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        mask = _shape_mask(rng, cls, h, w, size_range)
        box = _mask_box(mask)
        if box is None or (occupied & mask.astype(bool)).sum() > 0.2 * mask.sum():
            continue  # keep overlaps small so that every labelled shape stays mostly visible
        # a shape covering an earlier one must not hide it: only allow small overlaps, checked above
        colour = _contrasting_colour(rng, base)
        image[mask.astype(bool)] = colour.astype(np.uint8)
        occupied |= mask.astype(bool)
        classes.append(cls)
        boxes.append(box)
    noise = rng.normal(0, noise_std, size=image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    boxes = np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)
    return image, np.asarray(classes, np.int32), boxes


def yolo_label_rows(cls, boxes, h, w):
    """Label text in the YOLO format: one `cls cx cy w h` row per box, normalized by the image (h, w)."""
    rows = []
    for c, (x1, y1, x2, y2) in zip(cls, boxes):
        rows.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(rows) + ("\n" if rows else "")


def _write_images(root, split, split_id, indices, seed, imgsz):
    for i in indices:
        rng = np.random.default_rng([seed, split_id, i])
        image, cls, boxes = make_shapes_image(rng, imgsz=imgsz)
        cv2.imwrite(str(root / "images" / split / f"{i:06d}.png"), image)
        text = yolo_label_rows(cls, boxes, *image.shape[:2])
        (root / "labels" / split / f"{i:06d}.txt").write_text(text)


def _write_split(root, split, split_id, count, seed, imgsz, workers=0):
    """Write `count` images and labels; with `workers` processes, each writes every workers-th image (an image
    depends on its index alone, so the files are the same)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        _write_images(root, split, split_id, range(count), seed, imgsz)
        return

    # spawned, not forked: a fork of a process that runs JAX's threads can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_write_images, root, split, split_id, range(k, count, workers), seed, imgsz)
                for k in range(workers)]
        for job in jobs:
            job.result()


def _write_yaml(folder, root):
    """Write `folder/shapes.yaml` whose `path:` is the dataset's final location `root`."""
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    text = f"path: {root}\ntrain: images/train\nval: images/val\nnc: {len(CLASS_NAMES)}\nnames:\n{names}\n"
    (folder / "shapes.yaml").write_text(text)


def ensure_shapes_dataset(root=None, *, seed=0, num_train=400, num_val=100, imgsz=160, workers=0) -> Path:
    """Generate the shapes dataset once (deterministic in all arguments) and return its data yaml path.

    Args:
      root: folder to write into; default `cache_root() / f"shapes-v{VERSION}-s{seed}-{num_train}-{num_val}-
        {imgsz}"`. If it already holds a complete dataset nothing is written.
      seed: the dataset's seed.
      num_train, num_val: images per split.
      imgsz: long side of every image, pixels.
      workers: processes that write the images (0: this one); the files do not depend on it.
    Returns:
      Path of `root/shapes.yaml`.
    """
    if root is None:
        root = cache_root() / f"shapes-v{VERSION}-s{seed}-{num_train}-{num_val}-{imgsz}"
    root = Path(root).expanduser().resolve()
    if (root / _DONE_MARKER).exists():
        return root / "shapes.yaml"
    root.parent.mkdir(parents=True, exist_ok=True)
    # build in a sibling temp folder and rename, so concurrent callers never see a half-written dataset
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _write_split(staging, "train", 0, num_train, seed, imgsz, workers)
        _write_split(staging, "val", 1, num_val, seed, imgsz, workers)
        _write_yaml(staging, root)
        (staging / _DONE_MARKER).write_text(f"shapes v{VERSION}\n")
        if root.exists() and not any(root.iterdir()):
            root.rmdir()
        if root.exists():
            shutil.copytree(staging, root, dirs_exist_ok=True)
        else:
            try:
                staging.rename(root)
            except OSError:  # another process won the race
                pass
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root / "shapes.yaml"

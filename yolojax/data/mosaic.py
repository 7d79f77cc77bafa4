"""Mosaic: 4 (or 9) images tiled on one canvas, with their boxes (the reference's Mosaic behaviour).

Pure functions. Images are `(h, w, c) uint8` (c = 3 BGR, or 4 BGRA, which OpenCV warps about twice as fast), resized
so their long side is `s = imgsz`; boxes `(n, 4) float32 xyxy pixels` of their image. The canvas is `(2s, 2s, c)`
filled with 114; the caller then warps it to `(s, s)` with a border of `-s // 2` (see `mosaic_border`).

A mosaic is first a layout — one `Placement` per tile — from which labels follow (`mosaic_labels`) and pixels are
rendered (`render_canvas`), optionally only inside a window: the warp that follows reads a fraction of the canvas,
so building just that part saves most of the memory traffic. `mosaic4` / `mosaic9` do all of it at once.
Randomness (the 4-mosaic centre) is drawn by `sample_mosaic_center`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from yolojax.data.transforms import PAD_VALUE


class Placement(NamedTuple):
    """Tile pixels `image[ty:ty + (y2 - y1), tx:tx + (x2 - x1)]` go to `canvas[y1:y2, x1:x2]`; the tile's own
    (unclipped) origin on the canvas is (ox, oy), which shifts its boxes."""

    x1: int
    y1: int
    x2: int
    y2: int
    tx: int
    ty: int
    ox: int
    oy: int


def mosaic_border(imgsz: int):
    """(x, y) border, pixels, that RandomPerspective applies to a mosaic canvas: the output is `canvas + 2*border`."""
    return (-imgsz // 2, -imgsz // 2)


def sample_mosaic_center(rng, imgsz: int):
    """Mosaic centre (xc, yc) in canvas pixels, uniform in [s/2, 3s/2) per axis (y drawn first), truncated to int."""
    lo = -mosaic_border(imgsz)[0]
    yc = int(rng.uniform(lo, 2 * imgsz - lo))
    xc = int(rng.uniform(lo, 2 * imgsz - lo))
    return xc, yc


def layout4(shapes, imgsz, center):
    """Placements of 4 tiles of `shapes` [(h, w)] around `center` (xc, yc): top-left (tile 0, whose bottom-right
    corner sits on the centre), top-right, bottom-left, bottom-right, clipped to the (2s, 2s) canvas."""
    s2 = 2 * imgsz
    xc, yc = center
    out = []
    for k, (h, w) in enumerate(shapes):
        ox = xc - w if k in (0, 2) else xc
        oy = yc - h if k in (0, 1) else yc
        x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + w, s2), min(oy + h, s2)
        out.append(Placement(x1, y1, x2, y2, x1 - ox, y1 - oy, ox, oy))
    return out


def layout9(shapes, imgsz):
    """Placements of 9 tiles (centre, then clockwise from the top) on a 3s canvas, seen through its central
    (2s, 2s) window (the reference crops `s // 2` on each side)."""
    s, half = imgsz, imgsz // 2
    (h0, w0), out = shapes[0], []
    hp = wp = -1
    for k, (h, w) in enumerate(shapes):
        px, py = {
            0: (s, s), 1: (s, s - h), 2: (s + wp, s - h), 3: (s + w0, s), 4: (s + w0, s + hp),
            5: (s + w0 - w, s + h0), 6: (s + w0 - wp - w, s + h0), 7: (s - w, s + h0 - h),
            8: (s - w, s + h0 - hp - h),
        }[k]
        ox, oy = px - half, py - half
        # the reference clips negative corners on the 3s canvas first, then crops the window
        x1, y1 = max(max(px, 0) - half, 0), max(max(py, 0) - half, 0)
        x2, y2 = min(px + w - half, 2 * s), min(py + h - half, 2 * s)
        out.append(Placement(x1, y1, max(x2, x1), max(y2, y1), x1 - ox, y1 - oy, ox, oy))
        hp, wp = h, w
    return out


def mosaic_labels(classes, boxes, placements, canvas_size):
    """Tile labels on the canvas: shifted by each tile's origin, clipped to the canvas, zero-area boxes dropped.

    Returns: cls (n,) int32, boxes (n, 4) float32 xyxy canvas pixels.
    """
    shifted = [b + np.array([p.ox, p.oy, p.ox, p.oy], np.float32) for b, p in zip(boxes, placements)]
    cls = np.concatenate(classes).astype(np.int32)
    out = np.clip(np.concatenate(shifted).astype(np.float32).reshape(-1, 4), 0, canvas_size)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return cls[keep], out[keep]


def render_canvas(images, placements, canvas_size, window=None, out=None):
    """Paint the tiles, in order, on a 114-grey canvas, or only on the part of it inside `window`.

    Args:
      images: the tiles (h_k, w_k, c) uint8.
      placements: from `layout4` / `layout9`.
      canvas_size: side of the square canvas, pixels.
      window: (x0, y0, x1, y1) canvas pixels to render (default: all).
      out: optional uint8 array of at least the window's size, reused for the result.
    Returns:
      (y1 - y0, x1 - x0, c) uint8: canvas[y0:y1, x0:x1].
    """
    x0, y0, x1, y1 = window or (0, 0, canvas_size, canvas_size)
    shape = (y1 - y0, x1 - x0, images[0].shape[2])
    if out is None or out.size < np.prod(shape):
        canvas = np.full(shape, PAD_VALUE, np.uint8)
    else:
        canvas = out.reshape(-1)[: int(np.prod(shape))].reshape(shape)
        canvas.fill(PAD_VALUE)
    for image, p in zip(images, placements):
        a1, b1, a2, b2 = max(p.x1, x0), max(p.y1, y0), min(p.x2, x1), min(p.y2, y1)
        if a2 > a1 and b2 > b1:
            sx, sy = p.tx + a1 - p.x1, p.ty + b1 - p.y1
            canvas[b1 - y0:b2 - y0, a1 - x0:a2 - x0] = image[sy:sy + b2 - b1, sx:sx + a2 - a1]
    return canvas


def mosaic4(images, classes, boxes, imgsz, center):
    """Tile 4 images around `center` on a (2s, 2s) canvas.

    Args:
      images: 4 arrays (h_k, w_k, c) uint8, same c; image 0 goes top-left of the centre, then top-right, bottom-left,
        bottom-right.
      classes: 4 arrays (n_k,) int32.
      boxes: 4 arrays (n_k, 4) float32 xyxy pixels of their image.
      imgsz: s, pixels.
      center: (xc, yc) canvas pixels, from `sample_mosaic_center`.
    Returns:
      canvas (2s, 2s, c) uint8; cls (n,) int32; boxes (n, 4) float32 xyxy canvas pixels, clipped to the canvas,
      zero-area boxes removed.
    """
    placements = layout4([im.shape[:2] for im in images], imgsz, center)
    return (render_canvas(images, placements, 2 * imgsz),
            *mosaic_labels(classes, boxes, placements, 2 * imgsz))


def mosaic9(images, classes, boxes, imgsz):
    """Tile 9 images (centre, then clockwise from the top) and keep the central (2s, 2s) window.

    Args: as `mosaic4` with 9 images and no centre argument (the 9-mosaic has no random centre).
    Returns:
      canvas (2s, 2s, c) uint8; cls (n,); boxes (n, 4) xyxy in the (2s, 2s) canvas pixels, clipped, non-empty.
    """
    placements = layout9([im.shape[:2] for im in images], imgsz)
    return (render_canvas(images, placements, 2 * imgsz),
            *mosaic_labels(classes, boxes, placements, 2 * imgsz))

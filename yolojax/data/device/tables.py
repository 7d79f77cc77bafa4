"""What a host batch carries for the device-side augmentation: its batch keys and the warp's coordinate tables.

Plain numpy, run by the input pipeline (yolojax.data.augment) for every sample; `render_warped`
(yolojax.data.device.warp) turns the tables into OpenCV's source coordinates, bit for bit (see its docstring for
what OpenCV computes and why `m0 * x` is tabulated as an exact float pair).
"""
from __future__ import annotations

import numpy as np

from yolojax.data.perspective import composed_matrix

WARP_PREFIX = "warp_"  # batch keys of the device render's inputs
MIX_PREFIX = "mix_"  # within them, the MixUp partner's render inputs and the blend table `mix_lut`
TABLE_KEYS = ("row_x", "row_y", "col_x_hi", "col_x_lo", "col_y_hi", "col_y_lo", "origin")


def invert_affine(m):
    """OpenCV's `invertAffineTransform` of `m[:2]` in double, cast to float32 as its warp kernel does: (6,)."""
    m = np.asarray(m, np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22, a12, a21 = m[1, 1] * det, m[0, 0] * det, -m[0, 1] * det, -m[1, 0] * det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    return np.array([a11, a12, b1, a21, a22, b2]).astype(np.float32)


def _bits(x):
    return np.ascontiguousarray(x, np.float32).view(np.int32)


def affine_tables(matrix, out_size, origin=(0, 0), pixel_flip=None):
    """Per-row / per-column tables from which `warp.render_warped` computes OpenCV's source coordinates.

    Args: exactly what the CPU path passes to `perspective.warp_image`:
      matrix: (3, 3) float32, input (canvas) pixels -> output pixels; affine (last row 0, 0, 1).
      out_size: (w, h) output pixels.
      origin: (x0, y0) canvas pixels of the rendered window's top-left pixel.
      pixel_flip: optional (3, 3) float32 applied after `matrix` (`perspective.flip_matrix`).
    Returns: dict of int32 arrays (float32 bit patterns unless said otherwise):
      row_x, row_y: (h,) `X_y`, `Y_y` of yolojax.data.device.warp's docstring (window pixels).
      col_x_hi, col_x_lo: (w,) `m0 * x` exactly, as `hi + lo` (hi = float32(m0 * x)); col_y_hi, col_y_lo: `m3 * x`.
      origin: (2,) plain int32 (x0, y0).
    """
    m = np.asarray(matrix, np.float32)
    if m.shape != (3, 3) or m[2, 0] != 0 or m[2, 1] != 0:
        raise ValueError(f"affine (3, 3) matrix expected, got {m.tolist()}")
    inv = invert_affine(composed_matrix(m, origin, pixel_flip))
    w, h = out_size
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    tables = {"row_x": _bits(ys * inv[1] + inv[2]), "row_y": _bits(ys * inv[4] + inv[5])}
    for name, coef in (("x", inv[0]), ("y", inv[3])):
        hi = xs * coef  # float32 product: rounded once
        tables[f"col_{name}_hi"] = _bits(hi)
        tables[f"col_{name}_lo"] = _bits(xs.astype(np.float64) * np.float64(coef) - hi)  # exact in float32
    tables["origin"] = np.array(origin, np.int32).reshape(2)
    return tables


def tile_rows(tile_slots, placements, k=4):
    """One output image's `slots` (k,) int32 and `placements` (k, 6) int32 [x1, y1, x2, y2, ox, oy] for
    `warp.render_warped`, from its tiles' slots in the tile array and their `mosaic.Placement`s (padded with -1 /
    empty rectangles)."""
    if len(tile_slots) != len(placements) or len(placements) > k:
        raise ValueError(f"{len(tile_slots)} slots for {len(placements)} placements, at most {k}")
    slots = np.full(k, -1, np.int32)
    rows = np.zeros((k, 6), np.int32)
    for j, (slot, p) in enumerate(zip(tile_slots, placements)):
        slots[j] = slot
        rows[j] = (p.x1, p.y1, p.x2, p.y2, p.ox, p.oy)
    return slots, rows

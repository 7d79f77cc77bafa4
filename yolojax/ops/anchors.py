"""Anchor points for anchor-free heads (YOLOv8) and the distance <-> box transforms between them."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def make_anchors(feature_shapes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float = 0.5,
                 dtype=jnp.float32):
    """Cell-centre anchor points of every level, concatenated level by level in row-major (y, then x) order.

    Args:
      feature_shapes: per level `(h, w)` of the feature map (static Python ints).
      strides: per level stride in pixels, e.g. (8, 16, 32).
      offset: position inside the cell; 0.5 is the centre.
    Returns:
      anchor_points: (a, 2) `x, y` in grid units of its own level (multiply by stride for pixels),
        a = sum(h * w).
      stride_tensor: (a, 1) stride of each anchor's level, pixels.
    """
    if len(feature_shapes) != len(strides):
        raise ValueError(f"make_anchors: {len(feature_shapes)} feature shapes but {len(strides)} strides")
    points, stride_cols = [], []
    for (h, w), stride in zip(feature_shapes, strides):
        sx = jnp.arange(w, dtype=dtype) + offset
        sy = jnp.arange(h, dtype=dtype) + offset
        gy, gx = jnp.meshgrid(sy, sx, indexing="ij")
        points.append(jnp.stack([gx, gy], axis=-1).reshape(-1, 2))
        stride_cols.append(jnp.full((h * w, 1), stride, dtype=dtype))
    return jnp.concatenate(points, axis=0), jnp.concatenate(stride_cols, axis=0)


def dist2bbox(distance, anchor_points, xywh: bool = False):
    """Distances to the four sides -> boxes.

    Args:
      distance: (..., a, 4) `left, top, right, bottom` distances from each anchor point.
      anchor_points: (a, 2) `x, y`, same units as `distance`.
      xywh: return `cx, cy, w, h` instead of `x1, y1, x2, y2`.
    Returns:
      (..., a, 4) boxes in the same units.
    """
    lt, rb = distance[..., :2], distance[..., 2:]
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return jnp.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1)
    return jnp.concatenate([x1y1, x2y2], axis=-1)


def bbox2dist(anchor_points, bbox, reg_max: int):
    """xyxy boxes -> distances to the four sides, clipped to the DFL range [0, reg_max - 0.01].

    Args:
      anchor_points: (a, 2) `x, y` in grid units.
      bbox: (..., a, 4) xyxy in grid units.
      reg_max: number of DFL bins minus one is `reg_max - 1`; distances are clipped just under `reg_max - 1 + 1`.
    Returns:
      (..., a, 4) `left, top, right, bottom`, grid units.
    """
    x1y1, x2y2 = bbox[..., :2], bbox[..., 2:]
    return jnp.clip(jnp.concatenate([anchor_points - x1y1, x2y2 - anchor_points], axis=-1), 0, reg_max - 0.01)


# --- Anchor boxes for the two-stage path (RPN), same values and order as torchvision's AnchorGenerator. ---


def rpn_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], dtype=jnp.float32):
    """Zero-centred anchor boxes of one level: every aspect ratio x every size, ratio-major.

    `aspect_ratio = height / width`; an anchor of size `s` and ratio `r` has width `s / sqrt(r)` and height
    `s * sqrt(r)`, and its half-extents are rounded to integers (half to even), as the reference does.

    Args:
      sizes: anchor sizes in pixels (sqrt of the area), e.g. (32, 64).
      aspect_ratios: height / width ratios, e.g. (0.5, 1.0, 2.0).
    Returns:
      (len(aspect_ratios) * len(sizes), 4) xyxy offsets from the cell's corner point, pixels.
    """
    scales = jnp.asarray(sizes, dtype)
    h_ratios = jnp.sqrt(jnp.asarray(aspect_ratios, dtype))
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return jnp.round(jnp.stack([-ws, -hs, ws, hs], axis=1) / 2)


def rpn_grid_anchors(feature_shapes: Sequence[tuple[int, int]], strides: Sequence, sizes: Sequence[Sequence[float]],
                     aspect_ratios: Sequence[Sequence[float]], dtype=jnp.float32):
    """Anchor boxes of every level, concatenated level by level.

    Within a level the order is location-major (row-major y, then x) and anchor-minor (the order of
    `rpn_cell_anchors`), the layout of an RPN head's `(b, h, w, num_anchors)` output flattened.
    Cell `(y, x)` has its anchors centred on the pixel `(x * stride_x, y * stride_y)` (the cell's top-left
    corner), as in the reference.

    Args:
      feature_shapes: per level `(h, w)` of the feature map (static ints).
      strides: per level an int stride, or `(stride_y, stride_x)`, pixels (the reference uses
        `image_size // feature_size`).
      sizes: per level the anchor sizes, pixels.
      aspect_ratios: per level the height / width ratios.
    Returns:
      anchors: (a, 4) xyxy, pixels, a = sum(h * w * len(sizes[i]) * len(aspect_ratios[i])).
      anchors_per_level: tuple of Python ints, the number of anchors of each level.
    """
    if not len(feature_shapes) == len(strides) == len(sizes) == len(aspect_ratios):
        raise ValueError(f"rpn_grid_anchors: got {len(feature_shapes)} feature shapes, {len(strides)} strides, "
                         f"{len(sizes)} size sets and {len(aspect_ratios)} aspect-ratio sets; they must match")
    levels, counts = [], []
    for (h, w), stride, level_sizes, level_ratios in zip(feature_shapes, strides, sizes, aspect_ratios):
        stride_y, stride_x = (stride, stride) if isinstance(stride, int) else stride
        cell = rpn_cell_anchors(level_sizes, level_ratios, dtype)
        shift_y, shift_x = jnp.meshgrid(jnp.arange(h) * stride_y, jnp.arange(w) * stride_x, indexing="ij")
        shifts = jnp.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4).astype(dtype)
        levels.append((shifts + cell[None, :, :]).reshape(-1, 4))
        counts.append(h * w * cell.shape[0])
    return jnp.concatenate(levels, axis=0), tuple(counts)

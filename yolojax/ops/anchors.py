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

"""Box format conversions and IoU variants.

All functions are pure `jax.numpy` code: jit-, vmap- and grad-friendly. Boxes are `(..., 4)` arrays in the units
of the caller (pixels or normalized); the format is in each function's name or docstring.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

IOU_KINDS = ("iou", "giou", "diou", "ciou")


def xywh2xyxy(boxes):
    """Centre-size boxes to corner boxes.

    Args:
      boxes: (..., 4) `cx, cy, w, h`.
    Returns:
      (..., 4) `x1, y1, x2, y2`, same units and dtype.
    """
    xy, half_wh = boxes[..., :2], boxes[..., 2:] / 2
    return jnp.concatenate([xy - half_wh, xy + half_wh], axis=-1)


def xyxy2xywh(boxes):
    """Corner boxes to centre-size boxes.

    Args:
      boxes: (..., 4) `x1, y1, x2, y2`.
    Returns:
      (..., 4) `cx, cy, w, h`, same units and dtype.
    """
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1)


def box_area(boxes):
    """Area of xyxy boxes: (..., 4) -> (...). Degenerate boxes give 0 or negative values, as computed."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes_a, boxes_b, eps: float = 1e-7):
    """Pairwise IoU of two sets of xyxy boxes.

    Args:
      boxes_a: (n, 4) xyxy.
      boxes_b: (m, 4) xyxy, same units as `boxes_a`.
      eps: added to the union, as the reference does.
    Returns:
      (n, m) IoU in [0, 1].
    """
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = jnp.prod(a[..., 2:] - a[..., :2], axis=-1)
    area_b = jnp.prod(b[..., 2:] - b[..., :2], axis=-1)
    return inter / (area_a + area_b - inter + eps)


def bbox_iou(box1, box2, kind: str = "iou", eps: float = 1e-7):
    """Elementwise IoU / GIoU / DIoU / CIoU of xyxy boxes, with broadcasting.

    Follows the reference's formulas: `eps` is added to both heights and to the union; CIoU's trade-off weight
    `alpha = v / (v - iou + 1 + eps)` is a constant for the gradient (stop_gradient), as in the reference.

    Args:
      box1: (..., 4) xyxy.
      box2: (..., 4) xyxy, broadcastable against `box1`, same units.
      kind: one of "iou", "giou", "diou", "ciou".
      eps: numerical guard.
    Returns:
      (...) the broadcast shape without the last axis. IoU is in [0, 1]; the others in [-1, 1].
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"bbox_iou: kind must be one of {IOU_KINDS}, got {kind!r}")
    b1_x1, b1_y1, b1_x2, b1_y2 = (box1[..., i] for i in range(4))
    b2_x1, b2_y1, b2_x2, b2_y2 = (box2[..., i] for i in range(4))
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps

    inter = jnp.clip(jnp.minimum(b1_x2, b2_x2) - jnp.maximum(b1_x1, b2_x1), 0) * jnp.clip(
        jnp.minimum(b1_y2, b2_y2) - jnp.maximum(b1_y1, b2_y1), 0
    )
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou

    enclose_w = jnp.maximum(b1_x2, b2_x2) - jnp.minimum(b1_x1, b2_x1)
    enclose_h = jnp.maximum(b1_y2, b2_y2) - jnp.minimum(b1_y1, b2_y1)
    if kind == "giou":
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area

    diag2 = enclose_w**2 + enclose_h**2 + eps
    centre_dist2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if kind == "diou":
        return iou - centre_dist2 / diag2

    v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    alpha = jax.lax.stop_gradient(v / (v - iou + (1 + eps)))
    return iou - (centre_dist2 / diag2 + v * alpha)

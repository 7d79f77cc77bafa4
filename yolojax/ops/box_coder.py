"""Faster R-CNN box deltas: encode / decode boxes relative to anchors or proposals, clipping, small-box masks.

The parametrisation is the R-CNN one, as `torchvision.models.detection._utils.BoxCoder` uses it:

    dx = wx * (gx - ax) / aw      dy = wy * (gy - ay) / ah
    dw = ww * log(gw / aw)        dh = wh * log(gh / ah)

with `(ax, ay, aw, ah)` the centre and size of the reference box and `(gx, gy, gw, gh)` those of the target.
Decoding clamps `dw, dh` (after dividing by the weights) at `log(1000 / 16)` so that `exp` cannot overflow.
The RPN uses weights (1, 1, 1, 1), the RoI head (10, 10, 5, 5).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _centre_size(boxes):
    """(..., 4) xyxy -> four (...) arrays `cx, cy, w, h` (computed as x1 + 0.5 * w, like the reference)."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode_boxes(target_boxes, reference_boxes, weights: Sequence[float] = RPN_WEIGHTS):
    """Deltas that move `reference_boxes` onto `target_boxes`.

    Args:
      target_boxes: (..., 4) xyxy, pixels (e.g. the matched ground truth).
      reference_boxes: (..., 4) xyxy, pixels, broadcastable against `target_boxes` (anchors or proposals).
        Must have positive width and height.
      weights: `(wx, wy, ww, wh)` multipliers of the four deltas.
    Returns:
      (..., 4) float deltas `dx, dy, dw, dh` (unitless).
    """
    wx, wy, ww, wh = weights
    ref_x, ref_y, ref_w, ref_h = _centre_size(reference_boxes)
    tgt_x, tgt_y, tgt_w, tgt_h = _centre_size(target_boxes)
    dx = wx * (tgt_x - ref_x) / ref_w
    dy = wy * (tgt_y - ref_y) / ref_h
    dw = ww * jnp.log(tgt_w / ref_w)
    dh = wh * jnp.log(tgt_h / ref_h)
    return jnp.stack([dx, dy, dw, dh], axis=-1)


def decode_boxes(deltas, reference_boxes, weights: Sequence[float] = RPN_WEIGHTS,
                 clip_log_size: float = BBOX_XFORM_CLIP):
    """Apply deltas to reference boxes (inverse of `encode_boxes`).

    Args:
      deltas: (..., 4) `dx, dy, dw, dh` as produced by `encode_boxes` with the same `weights`.
      reference_boxes: (..., 4) xyxy, pixels, broadcastable against `deltas`; for per-class deltas pass
        `deltas (r, k, 4)` with `reference_boxes (r, 1, 4)`.
      weights: `(wx, wy, ww, wh)`.
      clip_log_size: upper clamp of `dw / ww` and `dh / wh` before `exp`.
    Returns:
      (..., 4) xyxy, pixels, the broadcast shape of the inputs. Not clipped to the image.
    """
    wx, wy, ww, wh = weights
    ref_x, ref_y, ref_w, ref_h = _centre_size(reference_boxes.astype(deltas.dtype))
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, clip_log_size)
    dh = jnp.minimum(deltas[..., 3] / wh, clip_log_size)
    centre_x = dx * ref_w + ref_x
    centre_y = dy * ref_h + ref_y
    half_w = 0.5 * (jnp.exp(dw) * ref_w)
    half_h = 0.5 * (jnp.exp(dh) * ref_h)
    return jnp.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1)


def clip_boxes_to_image(boxes, image_hw):
    """Clamp xyxy boxes into `[0, width] x [0, height]`.

    Args:
      boxes: (..., 4) xyxy, pixels.
      image_hw: `(height, width)` Python numbers, or an array (..., 2) broadcastable against `boxes[..., :2]`
        (e.g. `(b, 1, 2)` for per-image sizes of `(b, n, 4)` boxes).
    Returns:
      (..., 4) clipped boxes, same dtype.
    """
    image_hw = jnp.asarray(image_hw, boxes.dtype)
    height, width = image_hw[..., 0], image_hw[..., 1]
    x = jnp.clip(boxes[..., 0::2], 0, width[..., None])
    y = jnp.clip(boxes[..., 1::2], 0, height[..., None])
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def remove_small_boxes(boxes, min_size: float):
    """Keep mask of boxes with both sides `>= min_size` (torchvision's `remove_small_boxes`, as a mask).

    Args:
      boxes: (..., 4) xyxy, pixels.
      min_size: minimum width and height, pixels.
    Returns:
      (...) bool, True for boxes that are large enough.
    """
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)

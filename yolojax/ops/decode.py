"""Decoding YOLOv8 head outputs into boxes: shared by the model's inference path and the loss, so both decode
the same way (distribution focal bins -> distances -> boxes)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.anchors import dist2bbox, make_anchors

STRIDES = (8, 16, 32)  # the three detection levels of YOLOv8 (P3, P4, P5), pixels per cell


def dfl_expectation(box_logits, reg_max: int = 16):
    """Distribution Focal Loss decoding: expected bin index of each side's softmax (model decode and loss share it).

    Args:
      box_logits: (..., 4 * reg_max) logits, side-major (`left` bins first, then `top`, `right`, `bottom`).
    Returns:
      (..., 4) distances `left, top, right, bottom` in grid units of the level, float32, in [0, reg_max - 1].
    """
    logits = box_logits.astype(jnp.float32).reshape(*box_logits.shape[:-1], 4, reg_max)
    probs = jax.nn.softmax(logits, axis=-1)
    # multiply-and-sum rather than a matmul: exact float32 on GPUs, where an fp32 matmul may run as TF32
    return (probs * jnp.arange(reg_max, dtype=jnp.float32)).sum(axis=-1)


def flatten_maps(maps):
    """Per-level raw maps [(b, h, w, c)] -> (b, a, c), level by level, row-major inside a level."""
    return jnp.concatenate([m.reshape(m.shape[0], -1, m.shape[-1]) for m in maps], axis=1)


def decode_maps(maps, num_classes: int, reg_max: int = 16, strides=STRIDES):
    """Raw head maps -> boxes and class probabilities for every anchor.

    Args:
      maps: list of (b, h_l, w_l, 4 * reg_max + nc) raw maps, one per stride in `strides`.
    Returns:
      boxes: (b, a, 4) xywh, pixels of the network input, float32.
      class_probs: (b, a, nc) sigmoid class scores, float32.
    """
    anchor_points, stride_tensor = make_anchors([m.shape[1:3] for m in maps], strides, 0.5)
    flat = flatten_maps(maps).astype(jnp.float32)
    distances = dfl_expectation(flat[..., : 4 * reg_max], reg_max)
    boxes = dist2bbox(distances, anchor_points, xywh=True) * stride_tensor
    return boxes, jax.nn.sigmoid(flat[..., 4 * reg_max:])

"""Decoding YOLOv8 head outputs into boxes: shared by the model's inference path and the loss, so both decode
the same way (distribution focal bins -> distances -> boxes)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.anchors import dist2bbox, make_anchors

STRIDES = (8, 16, 32)  # the three detection levels of YOLOv8 (P3, P4, P5), pixels per cell


@jax.custom_vjp
def _bin_distribution(logits):
    """(..., n) float32 logits -> expected bin index (...) and log-probabilities (..., n) of their softmax."""
    return _bin_distribution_fwd(logits)[0]


def _expected_bin(probs):
    # multiply-and-sum rather than a matmul: exact float32 on GPUs, where an fp32 matmul may run as TF32
    return (probs * jnp.arange(probs.shape[-1], dtype=probs.dtype)).sum(axis=-1)


def _bin_distribution_fwd(logits):
    probs = jax.nn.softmax(logits, axis=-1)
    expectation = _expected_bin(probs)
    return (expectation, jax.nn.log_softmax(logits, axis=-1)), (probs, expectation)


def _bin_distribution_bwd(residuals, cotangents):
    # Both outputs' gradients in one elementwise pass over the probabilities: autodiff would give one softmax
    # backward per output (each a row reduction over the bins) and a third pass adding them.
    probs, expectation = residuals
    d_expectation, d_log_probs = cotangents
    bins = jnp.arange(probs.shape[-1], dtype=probs.dtype)
    from_expectation = d_expectation[..., None] * (bins - expectation[..., None])
    return (probs * (from_expectation - d_log_probs.sum(axis=-1, keepdims=True)) + d_log_probs,)


_bin_distribution.defvjp(_bin_distribution_fwd, _bin_distribution_bwd)


def dfl_distribution(box_logits, reg_max: int = 16):
    """Each side's softmax over its distribution focal bins, as the decode's expected distances and the loss's
    log-probabilities, from one softmax (and one pass for their joint gradient).

    Args:
      box_logits: (..., 4 * reg_max) logits, side-major (`left` bins first, then `top`, `right`, `bottom`).
    Returns:
      expectation: (..., 4) distances `left, top, right, bottom` in grid units of the level, float32, in
        [0, reg_max - 1].
      log_probs: (..., 4, reg_max) float32.
    """
    return _bin_distribution(box_logits.astype(jnp.float32).reshape(*box_logits.shape[:-1], 4, reg_max))


def dfl_expectation(box_logits, reg_max: int = 16):
    """Distribution Focal Loss decoding: expected bin index of each side's softmax (model decode and loss share it).

    Args:
      box_logits: (..., 4 * reg_max) logits, side-major (`left` bins first, then `top`, `right`, `bottom`).
    Returns:
      (..., 4) distances `left, top, right, bottom` in grid units of the level, float32, in [0, reg_max - 1].
    """
    return dfl_distribution(box_logits, reg_max)[0]


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

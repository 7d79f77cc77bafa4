"""Decoding YOLOv8 head outputs into boxes: shared by the model's inference path and the loss, so both decode
the same way (distribution focal bins -> distances -> boxes)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.anchors import dist2bbox, make_anchors

STRIDES = (8, 16, 32)  # the three detection levels of YOLOv8 (P3, P4, P5), pixels per cell


@jax.custom_vjp
def _bin_statistics(logits):
    """(..., n) logits -> expected bin index (...) and log-sum-exp (...) of their softmax, both float32."""
    return _bin_statistics_fwd(logits)[0]


def _bin_statistics_fwd(logits):
    x = logits.astype(jnp.float32)
    peak = x.max(axis=-1)
    weights = jnp.exp(x - peak[..., None])
    total = weights.sum(axis=-1)
    # multiply-and-sum rather than a matmul: exact float32 on GPUs, where an fp32 matmul may run as TF32
    expectation = (weights * jnp.arange(x.shape[-1], dtype=x.dtype)).sum(axis=-1) / total
    log_sum_exp = peak + jnp.log(total)
    # the logits themselves are the residual: the backward recomputes the probabilities from them elementwise, so
    # no (..., n) array of probabilities is written for it
    return (expectation, log_sum_exp), (logits, expectation, log_sum_exp)


def _bin_statistics_bwd(residuals, cotangents):
    logits, expectation, log_sum_exp = residuals
    d_expectation, d_log_sum_exp = cotangents
    x = logits.astype(jnp.float32)
    probs = jnp.exp(x - log_sum_exp[..., None])
    bins = jnp.arange(x.shape[-1], dtype=x.dtype)
    grad = probs * (d_expectation[..., None] * (bins - expectation[..., None]) + d_log_sum_exp[..., None])
    return (grad.astype(logits.dtype),)


_bin_statistics.defvjp(_bin_statistics_fwd, _bin_statistics_bwd)


def dfl_statistics(box_logits, reg_max: int = 16):
    """Each side's softmax over its distribution focal bins, summarised as the decode's expected distance and the
    log-sum-exp the loss's cross-entropy needs (`dfl_cross_entropy`), from one softmax.

    The gradient is written out: one elementwise pass that recomputes the probabilities from the logits.

    Args:
      box_logits: (..., 4 * reg_max) logits, side-major (`left` bins first, then `top`, `right`, `bottom`), any
        float dtype (the gradient comes back in it).
    Returns:
      expectation: (..., 4) distances `left, top, right, bottom` in grid units of the level, float32, in
        [0, reg_max - 1].
      log_sum_exp: (..., 4) float32, `log sum_j exp(logit_j)` over each side's bins.
    """
    return _bin_statistics(box_logits.reshape(*box_logits.shape[:-1], 4, reg_max))


def dfl_expectation(box_logits, reg_max: int = 16):
    """Distribution Focal Loss decoding: expected bin index of each side's softmax (model decode and loss share it).

    Args:
      box_logits: (..., 4 * reg_max) logits, side-major (`left` bins first, then `top`, `right`, `bottom`).
    Returns:
      (..., 4) distances `left, top, right, bottom` in grid units of the level, float32, in [0, reg_max - 1].
    """
    return dfl_statistics(box_logits, reg_max)[0]


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

"""The YOLOv8 detection loss: assign with TAL, then BCE classification + CIoU box + DFL, as a pure function.

Matches ultralytics 8.2.103 `v8DetectionLoss` number for number (see tests/test_parity_core.py).
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from yolojax.assign.tal import assign_anchors
from yolojax.losses.bbox import bbox_loss
from yolojax.losses.bce import bce_with_logits
from yolojax.ops.anchors import dist2bbox, make_anchors
from yolojax.ops.boxes import xywh2xyxy
from yolojax.ops.decode import dfl_statistics, flatten_maps

TARGET_KEYS = ("cls", "bboxes", "mask")


def flatten_levels(feats, channels: int, split: int):
    """Per-level NHWC head maps -> their first `split` channels and the rest, each with one anchor axis.

    Anchors come level by level, row-major inside a level, the order of `make_anchors` (and of the reference's
    flattening of NCHW maps). Each part is cut from each level before the levels are joined, so no (b, a, channels)
    array of both parts is built (nor, in the backward, its gradient).

    Args:
      feats: list of (b, h_i, w_i, channels) maps.
      channels: expected last-axis size.
      split: channels of the first part.
    Returns:
      (b, a, split) and (b, a, channels - split) with a = sum(h_i * w_i), in the maps' dtype.
    """
    for i, f in enumerate(feats):
        if f.ndim != 4 or f.shape[-1] != channels:
            raise ValueError(f"detection_loss: feats[{i}] has shape {f.shape}, expected (b, h, w, {channels}) "
                             f"= 4 * reg_max + num_classes channels")
    parts = [split_channels(f, split) for f in feats]
    return flatten_maps([first for first, _ in parts]), flatten_maps([rest for _, rest in parts])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def split_channels(x, at: int):
    """(..., c) -> (..., :at) and (..., at:), whose gradient is the concatenation of the two parts' gradients.

    Autodiff of two slices gives the sum of two zero-padded gradients; when `x` is itself a concatenation (the
    head's box and class maps), XLA then computes each part's gradient through that padded sum. A concatenation
    instead lets it hand each part's gradient straight to its branch. Each part's gradient is written to memory
    whole before anything reads it (an optimization barrier): otherwise XLA computes the loss's elementwise
    gradient inside the column reduction of the head's bias gradient, a kernel several times slower than the
    elementwise pass and the reduction apart.
    """
    return x[..., :at], x[..., at:]


def _split_channels_fwd(x, at):
    return split_channels(x, at), None


def _split_channels_bwd(at, _, cotangents):
    return (jnp.concatenate(jax.lax.optimization_barrier(cotangents), axis=-1),)


split_channels.defvjp(_split_channels_fwd, _split_channels_bwd)


def targets_to_pixels(targets: Mapping, image_hw: tuple[int, int]):
    """Padded normalized xywh targets -> the assigner's inputs.

    Args:
      targets: dict with `cls` (b, m) int, `bboxes` (b, m, 4) normalized xywh, `mask` (b, m) bool.
      image_hw: (height, width) of the network input, pixels.
    Returns:
      gt_labels (b, m, 1) int32, gt_bboxes (b, m, 4) xyxy pixels, mask_gt (b, m, 1) bool.
    """
    missing = [k for k in TARGET_KEYS if k not in targets]
    if missing:
        raise ValueError(f"detection_loss: targets lacks {missing}; expected keys {TARGET_KEYS}")
    h, w = image_hw
    scale = jnp.asarray([w, h, w, h], jnp.float32)
    gt_bboxes = xywh2xyxy(targets["bboxes"].astype(jnp.float32) * scale)
    return (targets["cls"].astype(jnp.int32)[..., None], gt_bboxes, targets["mask"].astype(bool)[..., None])


@jax.custom_vjp
def classification_loss(logits, target_labels, target_score):
    """Summed BCE of class logits against one-hot soft targets, without building the (b, a, c) targets.

    BCE is linear in its target, `bce(x, z) = bce(x, 0) - x * z`, and the target is `target_score` at the
    anchor's class and 0 elsewhere, so the sum is `sum bce(x, 0) - sum_anchors x[label] * target_score`.

    The gradient is written out, `sigmoid(x) - z` in one elementwise pass over the logits: autodiff would keep
    the derivative of `bce(x, 0)` as a float32 (b, a, c) array from the forward, and the label's logit is gathered
    here without the scatter its gradient would otherwise be. Only `logits` gets a gradient.

    Args:
      logits: (b, a, c) class logits, any float dtype (the gradient comes back in it).
      target_labels: (b, a) int class of each anchor's target, in [0, c) where target_score is not 0 (elsewhere any
        value, out of range included: the assigner gives c to every anchor of an image without boxes).
      target_score: (b, a) float32 soft target at that class.
    Returns:
      () summed loss, nats, float32.
    """
    return _classification_fwd(logits, target_labels, target_score)[0]


def _classification_fwd(logits, target_labels, target_score):
    x = logits.astype(jnp.float32)
    # clipped: an out-of-range label has target_score 0, so any finite logit multiplies it to 0
    logit_at_label = jnp.take_along_axis(x, target_labels[..., None].astype(jnp.int32), axis=-1, mode="clip")[..., 0]
    loss = bce_with_logits(x, 0.0).sum() - (logit_at_label * target_score).sum()
    return loss, (logits, target_labels, target_score)


def _classification_bwd(residuals, d_loss):
    logits, target_labels, target_score = residuals
    at_label = jnp.arange(logits.shape[-1]) == target_labels[..., None]
    target = jnp.where(at_label, target_score[..., None], 0.0)
    grad = d_loss * (jax.nn.sigmoid(logits.astype(jnp.float32)) - target)
    return grad.astype(logits.dtype), None, None


classification_loss.defvjp(_classification_fwd, _classification_bwd)


def detection_loss(feats: Sequence, targets: Mapping, *, num_classes: int, strides: Sequence[int] = (8, 16, 32),
                   reg_max: int = 16, box=7.5, cls=0.5, dfl=1.5, topk: int = 10, alpha=0.5, beta=6.0):
    """YOLOv8 training loss of one batch.

    Static: `num_classes`, `strides`, `reg_max`, `topk` and the shapes. The gains `box`, `cls`, `dfl` and the
    assigner's `alpha`, `beta` may be traced (e.g. `jax.vmap` over a batch of hyper-parameters). Computes in
    float32 whatever the dtype of `feats`.

    Args:
      feats: per level raw head outputs, each (b, h_i, w_i, 4 * reg_max + num_classes) NHWC: DFL logits first
        (side-major), then class logits. The input image is `h_0 * strides[0]` x `w_0 * strides[0]` pixels.
      targets: `cls` (b, m) int, `bboxes` (b, m, 4) normalized xywh, `mask` (b, m) bool (padded rows False).
        m may be 0.
      num_classes: number of classes c.
      strides: per level stride, pixels.
      reg_max: DFL bins per side.
      box, cls, dfl: gains of the box (CIoU), classification (BCE) and DFL terms.
      topk, alpha, beta: Task-Aligned Assigner settings.
    Returns:
      loss: () `items.sum() * b`, the quantity to differentiate.
      items: (3,) `box, cls, dfl` after gains, without gradient.
    """
    if len(feats) != len(strides):
        raise ValueError(f"detection_loss: {len(feats)} feature levels but {len(strides)} strides")
    no = 4 * reg_max + num_classes
    # in the head's dtype: the class BCE's written-out gradient recomputes from these logits, not a float32 copy
    pred_dist, pred_logits = flatten_levels(feats, no, 4 * reg_max)
    batch = pred_dist.shape[0]
    image_hw = (feats[0].shape[1] * strides[0], feats[0].shape[2] * strides[0])
    anchor_points, stride_tensor = make_anchors([f.shape[1:3] for f in feats], strides)

    gt_labels, gt_bboxes, mask_gt = targets_to_pixels(targets, image_hw)
    # float32 before the statistics: the DFL term reaches these logits through two paths (the statistics and the
    # target-bin picks), and their gradients must be added before the one rounding to the head's dtype
    pred_dist = pred_dist.astype(jnp.float32)
    distances, dist_log_sum_exp = dfl_statistics(pred_dist, reg_max)
    pred_bboxes = dist2bbox(distances, anchor_points)  # (b, a, 4) xyxy grid units

    target_labels, target_bboxes, target_score, fg_mask, _ = assign_anchors(
        pred_logits.astype(jnp.float32), pred_bboxes * stride_tensor, anchor_points * stride_tensor, gt_labels,
        gt_bboxes, mask_gt, num_classes=num_classes, topk=topk, alpha=alpha, beta=beta, from_logits=True)
    # the reference's (b, a, c) targets are one_hot(target_labels) * target_score: kept in that compact form
    target_score = jax.lax.stop_gradient(target_score)
    target_scores_sum = jnp.maximum(target_score.sum(), 1.0)

    loss_cls = classification_loss(pred_logits, target_labels, target_score) / target_scores_sum
    loss_box, loss_dfl = bbox_loss(pred_dist, dist_log_sum_exp, pred_bboxes, anchor_points,
                                   target_bboxes / stride_tensor, target_score, target_scores_sum, fg_mask)
    items = jnp.stack([loss_box * box, loss_cls * cls, loss_dfl * dfl])
    return items.sum() * batch, jax.lax.stop_gradient(items)

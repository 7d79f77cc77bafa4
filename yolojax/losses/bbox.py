"""Box regression losses of YOLOv8: CIoU loss and Distribution Focal Loss (DFL), weighted by target scores.

Both are written over all anchors with a foreground mask (static shapes); background anchors contribute exactly 0
to the value and to the gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.anchors import bbox2dist
from yolojax.ops.boxes import bbox_iou
from yolojax.ops.decode import (
    dfl_expectation,  # noqa: F401  (re-exported: the loss decodes as the model does)
    dfl_statistics,
)

# any finite, non-degenerate box: stands in for the (unused) target of background anchors so that no NaN or inf
# can reach the gradient through a masked branch
_PLACEHOLDER_BOX = (0.0, 0.0, 1.0, 1.0)


def dfl_loss(pred_dist, target_ltrb, reg_max: int = 16):
    """Distribution Focal Loss: cross-entropy to the two bins around each target distance, linearly weighted.

    A target `t` in [0, reg_max - 1 - 0.01] (clipped there first) with `l = floor(t)` gives
    `CE(l) * (l + 1 - t) + CE(l + 1) * (t - l)`, averaged over the four sides.

    Args:
      pred_dist: (..., 4 * reg_max) logits, side-major as in `dfl_expectation`.
      target_ltrb: (..., 4) target distances, bins (grid units).
      reg_max: bins per side.
    Returns:
      (...) loss per anchor, nats.
    """
    return dfl_cross_entropy(pred_dist, dfl_statistics(pred_dist, reg_max)[1], target_ltrb)


def dfl_cross_entropy(pred_dist, log_sum_exp, target_ltrb):
    """`dfl_loss` given each side's log-sum-exp: `CE(j) = log_sum_exp - logit_j`.

    The two logits are picked with masks rather than gathered, so that their gradient is elementwise.

    Args:
      pred_dist: (..., 4 * reg_max) logits, side-major.
      log_sum_exp: (..., 4) over each side's bins (`dfl_statistics`).
      target_ltrb: (..., 4) target distances, bins.
    Returns:
      (...) nats.
    """
    reg_max = pred_dist.shape[-1] // 4
    logits = pred_dist.reshape(*pred_dist.shape[:-1], 4, reg_max).astype(jnp.float32)
    target = jnp.clip(target_ltrb, 0, reg_max - 1 - 0.01)
    left = jnp.floor(target)
    weight_left = left + 1 - target
    bins = jnp.arange(reg_max, dtype=target.dtype)
    logit_left = jnp.where(bins == left[..., None], logits, 0).sum(axis=-1)
    logit_right = jnp.where(bins == left[..., None] + 1, logits, 0).sum(axis=-1)
    ce_left, ce_right = log_sum_exp - logit_left, log_sum_exp - logit_right
    return (ce_left * weight_left + ce_right * (1 - weight_left)).mean(axis=-1)


def bbox_loss(pred_dist, dist_log_sum_exp, pred_bboxes, anchor_points, target_bboxes, weight, target_scores_sum,
              fg_mask):
    """CIoU loss and DFL of the foreground anchors, each weighted by the anchor's target-score sum.

    Args:
      pred_dist: (b, a, 4 * reg_max) DFL logits, side-major.
      dist_log_sum_exp: (b, a, 4) their log-sum-exp per side (`dfl_statistics`, which also gives the expected
        distances that pred_bboxes decode: one softmax for both).
      pred_bboxes: (b, a, 4) decoded predictions, xyxy, grid units of each anchor's level.
      anchor_points: (a, 2) anchor centres, grid units.
      target_bboxes: (b, a, 4) assigned boxes, xyxy, grid units.
      weight: (b, a) the anchor's target-score sum over classes, `target_scores.sum(-1)` (a constant).
      target_scores_sum: () normaliser, `max(target_scores.sum(), 1)`.
      fg_mask: (b, a) bool, foreground anchors.
    Returns:
      loss_iou: () `sum_fg (1 - CIoU) * weight / target_scores_sum`.
      loss_dfl: () `sum_fg DFL * weight / target_scores_sum`.
    """
    weight = jnp.where(fg_mask, jax.lax.stop_gradient(weight), 0)  # (b, a)
    target_bboxes = jnp.where(fg_mask[..., None], jax.lax.stop_gradient(target_bboxes),
                              jnp.asarray(_PLACEHOLDER_BOX, pred_bboxes.dtype))
    ciou = bbox_iou(pred_bboxes, target_bboxes, kind="ciou")
    loss_iou = ((1.0 - ciou) * weight).sum() / target_scores_sum

    target_ltrb = bbox2dist(anchor_points, target_bboxes, pred_dist.shape[-1] // 4 - 1)
    loss_dfl = (dfl_cross_entropy(pred_dist, dist_log_sum_exp, target_ltrb) * weight).sum() / target_scores_sum
    return loss_iou, loss_dfl

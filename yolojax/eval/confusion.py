"""Detection confusion matrix with the reference's rules (ultralytics 8.2.103 ConfusionMatrix, task 'detect').

Rows are predicted classes, columns true classes; index `num_classes` is background. Per image with at least one
ground-truth box: detections above `conf` are paired class-agnostically with ground truth at IoU > `iou_threshold`;
each detection keeps its best-IoU box, then each box keeps its best-IoU detection. A matched box counts at
(detection class, box class), an unmatched box at (background, box class), and an unmatched detection at
(detection class, background) — the latter only when the image had at least one match, and images without ground
truth add nothing: both are the reference's behaviour, kept so that the matrices agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.eval.metrics import _last_argmax
from yolojax.ops.boxes import box_iou

VAL_CONF_DEFAULT = 0.001


def matrix_conf(conf: float | None) -> float:
    """The confidence the matrix uses: the reference switches val's default 0.001 (or None) to 0.25."""
    return 0.25 if conf is None or conf == VAL_CONF_DEFAULT else float(conf)


def confusion_counts(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid, *,
                     num_classes: int, conf: float = 0.25, iou_threshold: float = 0.45):
    """One image's contribution to the confusion matrix.

    Args:
      det_boxes: (d, 4) xyxy pixels. det_scores: (d,). det_classes: (d,) int in [0, num_classes). det_valid: (d,).
      gt_boxes: (g, 4) xyxy, same units. gt_classes: (g,) int. gt_valid: (g,) bool. g >= 1, d >= 1.
      num_classes: static. conf: detections need a score strictly above it. iou_threshold: pairs need IoU above it.
    Returns:
      (num_classes + 1, num_classes + 1) int32 counts, rows predicted, columns true, last index background.
    """
    nc = num_classes
    det_on = det_valid & (det_scores > conf)
    iou = box_iou(gt_boxes, det_boxes)  # (g, d)
    candidate = (iou > iou_threshold) & gt_valid[:, None] & det_on[None, :]
    det_best = _last_argmax(jnp.where(candidate, iou, -1), axis=0)  # (d,)
    chosen = candidate & (jnp.arange(gt_boxes.shape[0])[:, None] == det_best[None, :])
    gt_matched = jnp.any(chosen, axis=1)  # (g,)
    gt_best = _last_argmax(jnp.where(chosen, iou, -1), axis=1)  # (g,)
    det_matched = jnp.any((gt_best[:, None] == jnp.arange(det_boxes.shape[0])[None, :]) & gt_matched[:, None], 0)

    has_gt = jnp.any(gt_valid)
    any_match = jnp.any(gt_matched)
    det_cls = jnp.clip(det_classes, 0, nc - 1).astype(jnp.int32)
    gt_cls = jnp.clip(gt_classes, 0, nc - 1).astype(jnp.int32)
    rows = jnp.concatenate([jnp.where(gt_matched, det_cls[gt_best], nc), det_cls])
    cols = jnp.concatenate([gt_cls, jnp.full_like(det_cls, nc)])
    weights = jnp.concatenate([gt_valid, det_on & ~det_matched & any_match]) & has_gt
    return jnp.zeros((nc + 1, nc + 1), jnp.int32).at[rows, cols].add(weights.astype(jnp.int32))


def confusion_counts_batch(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid, **kwargs):
    """`confusion_counts` summed over a leading batch axis: (nc + 1, nc + 1) int32."""
    fn = lambda *a: confusion_counts(*a, **kwargs)  # noqa: E731
    per_image = jax.vmap(fn)(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid)
    return per_image.sum(axis=0)


def normalize_columns(matrix):
    """Each true-class column divided by its total (the reference adds 1e-9): (c, c) -> (c, c) float."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / (matrix.sum(0, keepdims=True) + 1e-9)


def tp_fp(matrix):
    """Per-class true and false positives from the matrix (background dropped): (nc,), (nc,)."""
    matrix = np.asarray(matrix)
    tp = matrix.diagonal()
    fp = matrix.sum(1) - tp
    return tp[:-1], fp[:-1]

"""Task-Aligned Assigner (TOOD / YOLOv8): which anchors learn which ground-truth box, and how strongly.

Behaviour follows ultralytics 8.2.103 `TaskAlignedAssigner` step by step, written as batched pure functions over
padded ground truth (static shapes, masks instead of boolean indexing):

1. candidates: anchor points strictly inside a real ground-truth box (`min side distance > eps_in_box`);
2. alignment metric `t = s ** alpha * u ** beta` for those candidates, `s` the predicted probability of the box's
   class and `u` the CIoU of box and prediction clipped at 0 (0 elsewhere);
3. the `topk` anchors of largest `t` per ground-truth box, kept only if they are candidates of a real box. Ties go
   to the lowest anchor index (torch's CPU top-k breaks them in heap order instead, so the reference itself is not
   tie-deterministic across devices; ties matter only among metric-0 anchors of a box with < topk positive ones);
4. an anchor kept by several boxes goes to the box of largest overlap `u` over *all* boxes (first index on ties);
5. targets: the box, its class, and a one-hot score scaled per box so its best anchor gets the box's best overlap.

Shapes: b images, a anchors, m padded ground-truth rows per image, c classes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.boxes import bbox_iou

EPS_IN_BOX = 1e-9  # an anchor on the border of a box is not inside it


def anchors_in_boxes(anchor_points, gt_bboxes, eps: float = EPS_IN_BOX):
    """Which anchor points lie strictly inside which boxes.

    Args:
      anchor_points: (a, 2) `x, y`, pixels.
      gt_bboxes: (b, m, 4) xyxy, pixels.
      eps: minimum distance to every side.
    Returns:
      (b, m, a) bool.
    """
    x, y = anchor_points[:, 0], anchor_points[:, 1]  # (a,)
    x1, y1, x2, y2 = (gt_bboxes[..., i, None] for i in range(4))  # (b, m, 1)
    return jnp.minimum(jnp.minimum(x - x1, y - y1), jnp.minimum(x2 - x, y2 - y)) > eps


def alignment_metric(pd_scores, pd_bboxes, gt_labels, gt_bboxes, candidates, alpha, beta, from_logits=False):
    """Task-alignment metric and overlaps of every (box, anchor) pair that is a candidate, 0 elsewhere.

    Args:
      pd_scores: (b, a, c) predicted class probabilities in [0, 1] (logits if `from_logits`).
      pd_bboxes: (b, a, 4) predicted boxes, xyxy pixels.
      gt_labels: (b, m) int class of each box (any value on padded rows).
      gt_bboxes: (b, m, 4) xyxy pixels.
      candidates: (b, m, a) bool, anchor inside a real box.
      alpha, beta: exponents of the class score and of the overlap (floats, may be traced).
      from_logits: apply the sigmoid here, to the (b, m, a) gathered values only.
    Returns:
      align_metric: (b, m, a) `score ** alpha * overlap ** beta`, 0 off candidates.
      overlaps: (b, m, a) CIoU clipped at 0, 0 off candidates.
    """
    labels = jnp.clip(gt_labels, 0, pd_scores.shape[-1] - 1)
    # box_scores[i, j, k] = pd_scores[i, k, labels[i, j]]: one column slice per box, (b, m) indices only
    box_scores = jnp.swapaxes(jax.vmap(lambda scores, cls: scores[:, cls])(pd_scores, labels), 1, 2)  # (b, m, a)
    if from_logits:
        box_scores = jax.nn.sigmoid(box_scores)
    box_scores = jnp.where(candidates, box_scores, 0)
    ciou = bbox_iou(gt_bboxes[:, :, None, :], pd_bboxes[:, None, :, :], kind="ciou")  # (b, m, a)
    overlaps = jnp.where(candidates, jnp.maximum(ciou, 0), 0)
    return box_scores**alpha * overlaps**beta, overlaps


def topk_mask(metric, mask_gt, topk: int):
    """Anchors among the `topk` largest metric values of each real box row; ties go to the lowest anchor index.

    `lax.top_k` indices turned into a mask by one-hot comparisons (no scatter). As in the reference, a padded
    row's picks all collapse to anchor 0, which is then dropped as picked more than once; for topk == 1 the mask
    drops it.

    Args:
      metric: (b, m, a) alignment metric, finite.
      mask_gt: (b, m) bool, real rows.
      topk: static number of picks per row, <= a.
    Returns:
      (b, m, a) bool.
    """
    _, idx = jax.lax.top_k(metric, topk)  # (b, m, k), equal values: lowest index first
    idx = jnp.where(mask_gt[..., None], idx, 0)
    anchor_ids = jnp.arange(metric.shape[-1], dtype=idx.dtype)
    count = jnp.zeros(metric.shape, jnp.int32)  # count[..., j] = #{k : idx[..., k] == j}
    for k in range(topk):
        count = count + (idx[..., k : k + 1] == anchor_ids).astype(jnp.int32)
    return (count == 1) & mask_gt[..., None]


def _ahead(value, index, other_value, other_index):
    """Order of the walk: larger value first, lower index first among equal values."""
    return (value > other_value) | ((value == other_value) & (index < other_index))


def _merge_best_two(first, second):
    """The best two of two (best, runner-up) pairs, each pair (value, index, value, index) in walk order."""
    v1, i1, v2, i2 = first
    w1, j1, w2, j2 = second
    first_leads = _ahead(v1, i1, w1, j1)
    lead_v, lead_i = jnp.where(first_leads, v1, w1), jnp.where(first_leads, i1, j1)
    # the runner-up is the better of the leader's own runner-up and the other pair's best
    cv, ci = jnp.where(first_leads, v2, v1), jnp.where(first_leads, i2, i1)
    dv, di = jnp.where(first_leads, w1, w2), jnp.where(first_leads, j1, j2)
    c_ahead = _ahead(cv, ci, dv, di)
    return lead_v, lead_i, jnp.where(c_ahead, cv, dv), jnp.where(c_ahead, ci, di)


def _best_two(values, indices):
    """Per row of (..., a) values and their int32 indices: the best and second-best element in walk order, as
    (value, index, value, index), each (..., 1), from one variadic reduction (one pass over the row)."""
    far = jnp.asarray(values.shape[-1], indices.dtype)
    none_v, none_i = jnp.full_like(values, -jnp.inf), jnp.full_like(indices, far)
    init = (jnp.asarray(-jnp.inf, values.dtype), far, jnp.asarray(-jnp.inf, values.dtype), far)
    best = jax.lax.reduce((values, indices, none_v, none_i), init, _merge_best_two, (values.ndim - 1,))
    return tuple(x[..., None] for x in best)


def topk_mask_walk(metric, mask_gt, topk: int):
    """Same result as `topk_mask` without any top-k or sort primitive.

    The walk goes down the order (value descending, index ascending) two elements per row reduction: each pass
    finds the best two elements after the last one found; the picks are every element not after the k-th. Faster
    than lax.top_k on GPUs, slow on CPU (see `select_topk`).

    Args / Returns: as `topk_mask`.
    """
    anchor_ids = jnp.broadcast_to(jnp.arange(metric.shape[-1], dtype=jnp.int32), metric.shape)
    kth_val = jnp.full((*metric.shape[:-1], 1), jnp.inf, metric.dtype)
    kth_idx = jnp.full((*metric.shape[:-1], 1), -1, jnp.int32)
    for found in range(0, topk, 2):
        remaining = jnp.where(_ahead(kth_val, kth_idx, metric, anchor_ids), metric, -jnp.inf)
        best_val, best_idx, next_val, next_idx = _best_two(remaining, anchor_ids)
        kth_val, kth_idx = (next_val, next_idx) if topk - found >= 2 else (best_val, best_idx)
    picked = ~_ahead(kth_val, kth_idx, metric, anchor_ids)
    return picked & mask_gt[..., None]


def select_topk(metric, mask_gt, topk: int):
    """`topk_mask` or `topk_mask_walk` (same result), whichever is faster on the default backend: the walk on GPUs,
    `lax.top_k` on the CPU (benchmarks/2026-11-25_step_ops_vs_reference/README.md)."""
    select = topk_mask_walk if jax.default_backend() == "gpu" else topk_mask
    return select(metric, mask_gt, topk)


def resolve_multiple_boxes(mask_pos, overlaps):
    """Give an anchor claimed by several boxes to the box of largest overlap over all rows (first index on ties).

    Args:
      mask_pos: (b, m, a) bool, positive (box, anchor) pairs.
      overlaps: (b, m, a) clipped CIoU, 0 off candidates.
    Returns:
      gt_idx: (b, a) int32 assigned row (0 for background anchors).
      fg_mask: (b, a) bool, anchor is positive.
      mask_pos: (b, m, a) bool, at most one True per anchor.
    """
    num_rows = mask_pos.shape[1]
    row_ids = jnp.arange(num_rows, dtype=jnp.int32)[None, :, None]
    claims = mask_pos.sum(axis=1, dtype=jnp.int32)  # (b, a)
    best_row = jnp.argmax(overlaps, axis=1).astype(jnp.int32)  # (b, a)
    mask_pos = jnp.where((claims > 1)[:, None, :], row_ids == best_row[:, None, :], mask_pos)
    gt_idx = jnp.argmax(mask_pos, axis=1).astype(jnp.int32)
    return gt_idx, mask_pos.any(axis=1), mask_pos


def assign_anchors(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, *, num_classes: int,
                   topk: int = 10, alpha=0.5, beta=6.0, eps=1e-9, from_logits: bool = False):
    """`task_aligned_assign` with the soft class target kept as one value per anchor instead of (b, a, c).

    `scores = one_hot(labels, num_classes) * target_score[..., None]`; the loss uses this compact form so that no
    (b, a, c) target array is built, and passes class logits with `from_logits=True` so that the sigmoid runs on
    the (b, m, a) values the metric reads, not on all of (b, a, c). Other args as `task_aligned_assign`.

    Returns:
      labels: (b, a) int32; bboxes: (b, a, 4) xyxy pixels; target_score: (b, a) float32 soft target at the
      anchor's class (0 for background); fg_mask: (b, a) bool; gt_idx: (b, a) int32.
    """
    b, a, c = pd_scores.shape
    if c != num_classes:
        raise ValueError(f"task_aligned_assign: pd_scores has {c} classes, num_classes={num_classes}")
    m = gt_bboxes.shape[1]
    if m == 0:
        return (jnp.full((b, a), num_classes, jnp.int32), jnp.zeros((b, a, 4), pd_bboxes.dtype),
                jnp.zeros((b, a), jnp.float32), jnp.zeros((b, a), bool), jnp.zeros((b, a), jnp.int32))

    pd_scores, pd_bboxes, anc_points, gt_bboxes = jax.lax.stop_gradient((pd_scores, pd_bboxes, anc_points, gt_bboxes))
    labels = gt_labels.reshape(b, m).astype(jnp.int32)
    real = mask_gt.reshape(b, m).astype(bool)

    candidates = anchors_in_boxes(anc_points, gt_bboxes) & real[..., None]
    metric, overlaps = alignment_metric(pd_scores, pd_bboxes, labels, gt_bboxes, candidates, alpha, beta,
                                        from_logits)
    mask_pos = select_topk(metric, real, topk) & candidates
    gt_idx, fg_mask, mask_pos = resolve_multiple_boxes(mask_pos, overlaps)

    target_labels = jnp.maximum(jnp.take_along_axis(labels, gt_idx, axis=1), 0)  # (b, a)
    target_bboxes = jnp.take_along_axis(gt_bboxes, gt_idx[..., None], axis=1)  # (b, a, 4)

    # per-box scale: the box's best overlap over its best metric; each anchor takes its own box's value
    metric = jnp.where(mask_pos, metric, 0)
    best_metric = metric.max(axis=-1, keepdims=True)  # (b, m, 1)
    best_overlap = jnp.where(mask_pos, overlaps, 0).max(axis=-1, keepdims=True)
    norm = (metric * best_overlap / (best_metric + eps)).max(axis=1)  # (b, a)
    target_score = jnp.where(fg_mask & (target_labels < num_classes), norm, 0).astype(jnp.float32)
    return target_labels, target_bboxes, target_score, fg_mask, gt_idx


def task_aligned_assign(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, *, num_classes: int,
                        topk: int = 10, alpha=0.5, beta=6.0, eps=1e-9):
    """Assign ground-truth boxes to anchors by the task-alignment metric (ultralytics 8.2.103 semantics).

    Pure and static-shape: jit, vmap and grad friendly (inputs are treated as constants, like the reference's
    `no_grad`). `alpha`, `beta` and `eps` may be traced values; `num_classes` and `topk` are static.

    Args:
      pd_scores: (b, a, c) predicted class probabilities (after sigmoid).
      pd_bboxes: (b, a, 4) predicted boxes, xyxy pixels.
      anc_points: (a, 2) anchor centres, pixels.
      gt_labels: (b, m, 1) int class ids in [0, c) (padded rows: anything, usually 0).
      gt_bboxes: (b, m, 4) xyxy pixels (padded rows: anything, usually 0).
      mask_gt: (b, m, 1) bool or {0, 1}, real rows. m may be 0.
      num_classes: c; also the background label of the m == 0 case.
      topk: candidates per box.
      alpha, beta: exponents of class score and overlap in the metric.
      eps: guard in the per-box normalisation.
    Returns:
      labels: (b, a) int32 class of the assigned row (the reference's value for background anchors: row 0's
        class, or `num_classes` when m == 0).
      bboxes: (b, a, 4) xyxy pixels of the assigned row.
      scores: (b, a, c) float32 soft one-hot targets, 0 for background.
      fg_mask: (b, a) bool.
      gt_idx: (b, a) int32 assigned row, 0 for background.
    """
    labels, bboxes, target_score, fg_mask, gt_idx = assign_anchors(
        pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, num_classes=num_classes, topk=topk,
        alpha=alpha, beta=beta, eps=eps)
    scores = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * target_score[..., None]
    return labels, bboxes, scores, fg_mask, gt_idx

"""IoU matching and balanced sampling for the two-stage path (RPN anchors and RoI-head proposals).

Same rules as torchvision's `Matcher` and `BalancedPositiveNegativeSampler`, written over padded arrays with masks:
ground truth is `(m, 4)` with a `(m,)` validity mask, candidates `(a, 4)` with a `(a,)` mask, and the sampler draws
with an explicit PRNG key and returns fixed-size masks / index lists.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.ops.boxes import box_iou

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match_boxes(iou, gt_mask, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool):
    """Best ground truth of every candidate, or a negative code (torchvision's `Matcher`).

    Candidate `j` gets `argmax_i iou[i, j]` when that IoU is `>= high_threshold`, `BETWEEN_THRESHOLDS` (-2) when it
    is in `[low, high)`, and `BELOW_LOW_THRESHOLD` (-1) below `low_threshold`. With low-quality matches, every
    candidate that ties for the highest IoU of some ground truth (even a low one, even 0) keeps its argmax match.

    Args:
      iou: (m, a) IoU of each ground truth with each candidate.
      gt_mask: (m,) bool, False rows are padding and never match.
      high_threshold, low_threshold: IoU thresholds, `low <= high`.
      allow_low_quality_matches: see above (True for the RPN, False for the RoI head).
    Returns:
      (a,) int32: matched ground-truth index in [0, m), or -1 / -2. All -1 when no ground truth is valid.
    """
    if low_threshold > high_threshold:
        raise ValueError(f"match_boxes: low_threshold {low_threshold} > high_threshold {high_threshold}")
    iou = jnp.where(gt_mask[:, None], jnp.nan_to_num(iou, nan=0.0), -1.0)  # 0/0 of empty boxes -> 0
    best_iou = jnp.max(iou, axis=0)
    best_gt = jnp.argmax(iou, axis=0).astype(jnp.int32)
    matches = jnp.where(best_iou >= high_threshold, best_gt,
                        jnp.where(best_iou >= low_threshold, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD))
    if allow_low_quality_matches:
        best_per_gt = jnp.max(iou, axis=1, keepdims=True)
        is_best_for_some_gt = jnp.any((iou == best_per_gt) & gt_mask[:, None], axis=0)
        matches = jnp.where(is_best_for_some_gt, best_gt, matches)
    return matches.astype(jnp.int32)


def anchor_labels(gt_boxes, gt_mask, anchors, high_threshold: float = 0.7, low_threshold: float = 0.3):
    """RPN training labels of one image: 1 foreground, 0 background, -1 ignored, and each anchor's matched box.

    Args:
      gt_boxes: (m, 4) xyxy, pixels; gt_mask: (m,) bool.
      anchors: (a, 4) xyxy, pixels.
    Returns:
      labels: (a,) float32 in {1, 0, -1}; matched_boxes: (a, 4) the matched ground truth (box 0 for unmatched
      anchors, as in the reference; only foreground anchors use it).
    """
    matches = match_boxes(box_iou(gt_boxes, anchors, eps=0.0), gt_mask, high_threshold, low_threshold, True)
    labels = jnp.where(matches >= 0, 1.0, jnp.where(matches == BETWEEN_THRESHOLDS, -1.0, 0.0))
    return labels.astype(jnp.float32), gt_boxes[jnp.maximum(matches, 0)]


def proposal_labels(gt_boxes, gt_classes, gt_mask, proposals, proposal_mask, high_threshold: float = 0.5,
                    low_threshold: float = 0.5):
    """RoI-head training labels of one image (torchvision's `assign_targets_to_proposals`).

    Args:
      gt_boxes: (m, 4) xyxy, pixels; gt_classes: (m,) int32 foreground classes counted from 1 (0 is background);
      gt_mask: (m,) bool.
      proposals: (p, 4) xyxy, pixels; proposal_mask: (p,) bool, False rows are padding (label -1, never sampled).
    Returns:
      labels: (p,) int32 class (>= 1), 0 background, -1 ignored; matched_boxes: (p, 4) matched ground truth.
    """
    matches = match_boxes(box_iou(gt_boxes, proposals, eps=0.0), gt_mask, high_threshold, low_threshold, False)
    matched = jnp.maximum(matches, 0)
    labels = jnp.where(matches >= 0, gt_classes[matched], jnp.where(matches == BETWEEN_THRESHOLDS, -1, 0))
    labels = jnp.where(proposal_mask, labels, -1)
    return labels.astype(jnp.int32), gt_boxes[matched]


def sample_balanced(key, labels, batch_size: int, positive_fraction: float):
    """Random balanced subset of positives (label >= 1) and negatives (label == 0) of one image.

    At most `int(batch_size * positive_fraction)` positives, negatives fill the rest of `batch_size` (both capped
    by what exists); the choice is uniform, driven by `key`.

    Args:
      key: PRNG key.
      labels: (a,) numbers: >= 1 positive, 0 negative, < 0 ignored.
      batch_size: sampled elements per image (static).
      positive_fraction: target share of positives.
    Returns:
      positive: (a,) bool; negative: (a,) bool (disjoint, together at most `batch_size` True);
      order: (batch_size,) int32 indices of the sampled elements (positives first), and
      order_valid: (batch_size,) bool, False for padding rows when fewer than `batch_size` were sampled.
    """
    positive_pool, negative_pool = labels >= 1, labels == 0
    num_pos = jnp.minimum(jnp.sum(positive_pool), int(batch_size * positive_fraction))
    num_neg = jnp.minimum(jnp.sum(negative_pool), batch_size - num_pos)
    priority = jax.random.uniform(key, labels.shape)
    rank = _rank_within(priority, positive_pool), _rank_within(priority, negative_pool)
    positive = positive_pool & (rank[0] < num_pos)
    negative = negative_pool & (rank[1] < num_neg)
    # positives first, then negatives, each in random order; unsampled last
    sort_key = jnp.where(positive, priority, jnp.where(negative, 1.0 + priority, 3.0))
    order = jnp.argsort(sort_key).astype(jnp.int32)
    order = jnp.pad(order, (0, max(0, batch_size - order.shape[0])))[:batch_size]  # fewer candidates than rows
    order_valid = jnp.arange(batch_size) < num_pos + num_neg
    return positive, negative, order, order_valid


def _rank_within(priority, pool):
    """(a,) rank of each pool member by ascending priority (0-based); non-members get ranks past the pool."""
    order = jnp.argsort(jnp.where(pool, priority, 2.0))
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))

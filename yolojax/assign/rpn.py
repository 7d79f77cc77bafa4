"""RPN training targets: each anchor labelled foreground / background / ignored by IoU with the ground truth, a
balanced sample of them, and the box deltas the head should predict (torchvision's RPN assignment)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.assign.matcher import anchor_labels, sample_balanced
from yolojax.ops.box_coder import RPN_WEIGHTS, encode_boxes


def rpn_targets(key, anchors, gt_boxes, gt_mask, *, fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                batch_size_per_image: int = 256, positive_fraction: float = 0.5):
    """Per-anchor RPN training targets for a batch: labels, sampled masks and box deltas.

    Args:
      key: PRNG key for the balanced sampler.
      anchors: (a, 4) xyxy pixels.
      gt_boxes: (b, m, 4) xyxy pixels; gt_mask: (b, m) bool.
    Returns:
      labels: (b, a) float32 {1, 0, -1}; positive, negative: (b, a) bool sampled masks;
      target_deltas: (b, a, 4) RPN-coder deltas of each foreground anchor's matched box (0 elsewhere).
    """
    keys = jax.random.split(key, gt_boxes.shape[0])

    def one_image(k, boxes, mask):
        labels, matched = anchor_labels(boxes, mask, anchors, fg_iou_thresh, bg_iou_thresh)
        positive, negative, _, _ = sample_balanced(k, labels, batch_size_per_image, positive_fraction)
        deltas = encode_boxes(matched, anchors, RPN_WEIGHTS)
        return labels, positive, negative, jnp.where(labels[:, None] > 0, deltas, 0.0)  # no inf from empty boxes

    return jax.vmap(one_image)(keys, gt_boxes, gt_mask)

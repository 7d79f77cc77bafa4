"""Region Proposal Network: the head, the proposal layer (static shapes) and the RPN training targets.

The proposal layer follows torchvision's `RegionProposalNetwork.filter_proposals` (and the notes in shared/seeds):
per feature level keep the `pre_nms_top_n` anchors with the highest objectness, decode their deltas, clip to the
image, drop boxes with a side below `min_size` and scores below `score_thresh`, run NMS (IoU `nms_thresh`)
independently per level, and keep the `post_nms_top_n` best. Every step has a static shape: dropped boxes become
masked rows, and the result is `(b, post_nms_top_n)` rows with a validity mask, in descending score.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from yolojax.assign.matcher import anchor_labels, sample_balanced
from yolojax.ops.box_coder import RPN_WEIGHTS, clip_boxes_to_image, decode_boxes, encode_boxes, remove_small_boxes
from yolojax.ops.nms import batched_nms


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by all levels, then 1x1 convs to objectness logits and box deltas.

    Attributes:
      num_anchors: anchors per location (len(sizes) * len(aspect_ratios), the same on every level).
      dtype: compute dtype; parameters are float32. Weights ~ N(0, 0.01), biases 0, as in the reference.

    Call with a list of (b, h_l, w_l, c) maps (same c on every level). Returns
      objectness: (b, a) float32 logits, deltas: (b, a, 4) float32, with a = sum(h_l * w_l * num_anchors) in the
      order of `yolojax.ops.anchors.rpn_grid_anchors` (level, row-major location, anchor).
    """

    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]):
        init = dict(kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros, dtype=self.dtype,
                    param_dtype=jnp.float32)
        channels = features[0].shape[-1]
        conv = nn.Conv(channels, (3, 3), padding=1, name="conv", **init)
        logits_conv = nn.Conv(self.num_anchors, (1, 1), name="cls_logits", **init)
        deltas_conv = nn.Conv(self.num_anchors * 4, (1, 1), name="bbox_pred", **init)
        logits, deltas = [], []
        for x in features:
            t = nn.relu(conv(x))
            b = x.shape[0]
            logits.append(logits_conv(t).reshape(b, -1))
            deltas.append(deltas_conv(t).reshape(b, -1, 4))
        return (jnp.concatenate(logits, axis=1).astype(jnp.float32),
                jnp.concatenate(deltas, axis=1).astype(jnp.float32))


def filter_proposals(proposals, objectness, image_hw, anchors_per_level: Sequence[int], *, pre_nms_top_n: int,
                     post_nms_top_n: int, nms_thresh: float = 0.7, score_thresh: float = 0.0,
                     min_size: float = 1e-3):
    """The proposal layer with static shapes (torchvision's `filter_proposals`).

    Args:
      proposals: (b, a, 4) decoded boxes, xyxy pixels, in anchor order.
      objectness: (b, a) logits.
      image_hw: `(height, width)` of the (padded) input images, pixels, or a (b, 2) array of per-image sizes.
      anchors_per_level: number of anchors of each level (static), summing to a.
      pre_nms_top_n: boxes kept per level before NMS (capped by the level's size).
      post_nms_top_n: rows of the output.
      nms_thresh: IoU above which a lower-scoring box of the same level is suppressed.
      score_thresh: minimum sigmoid(objectness) (kept when >=).
      min_size: minimum box side after clipping, pixels.
    Returns:
      boxes: (b, post_nms_top_n, 4) xyxy pixels, descending score; scores: (b, post_nms_top_n) sigmoid
      objectness; valid: (b, post_nms_top_n) bool. Invalid rows hold arbitrary boxes with score 0.
    """
    if sum(anchors_per_level) != proposals.shape[1]:
        raise ValueError(f"filter_proposals: anchors_per_level sums to {sum(anchors_per_level)} but proposals have "
                         f"{proposals.shape[1]} rows")
    objectness = lax.stop_gradient(objectness)
    proposals = lax.stop_gradient(proposals)
    picks, levels, start = [], [], 0
    for level, count in enumerate(anchors_per_level):
        _, top = lax.top_k(objectness[:, start:start + count], min(pre_nms_top_n, count))
        picks.append(top + start)
        levels.append(jnp.full(top.shape[1:], level, jnp.int32))
        start += count
    picks, levels = jnp.concatenate(picks, axis=1), jnp.concatenate(levels)
    boxes = jnp.take_along_axis(proposals, picks[..., None], axis=1)
    scores = jax.nn.sigmoid(jnp.take_along_axis(objectness, picks, axis=1))
    image_hw = jnp.broadcast_to(jnp.asarray(image_hw, boxes.dtype), (boxes.shape[0], 2))
    boxes = clip_boxes_to_image(boxes, image_hw[:, None, :])
    candidate = remove_small_boxes(boxes, min_size) & (scores >= score_thresh)

    def one_image(b, s, m):
        keep, valid = batched_nms(b, s, levels, nms_thresh, post_nms_top_n, candidate_mask=m)
        return b[keep], jnp.where(valid, s[keep], 0.0), valid

    return jax.vmap(one_image)(boxes, scores, candidate)


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


def decode_proposals(deltas, anchors):
    """(b, a, 4) RPN deltas + (a, 4) anchors -> (b, a, 4) xyxy pixel boxes (not differentiated, as in the reference)."""
    return decode_boxes(lax.stop_gradient(deltas), anchors[None], RPN_WEIGHTS)

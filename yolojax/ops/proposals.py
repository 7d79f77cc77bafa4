"""The Region Proposal Network's proposal layer (static shapes): deltas -> boxes -> the best boxes per image.

The proposal layer follows torchvision's `RegionProposalNetwork.filter_proposals` (and the notes in shared/seeds):
per feature level keep the `pre_nms_top_n` anchors with the highest objectness, decode their deltas, clip to the
image, drop boxes with a side below `min_size` and scores below `score_thresh`, run NMS (IoU `nms_thresh`)
independently per level, and keep the `post_nms_top_n` best. Every step has a static shape: dropped boxes become
masked rows, and the result is `(b, post_nms_top_n)` rows with a validity mask, in descending score.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from yolojax.ops.box_coder import (
    RPN_WEIGHTS,
    clip_boxes_to_image,
    decode_boxes,
    remove_small_boxes,
)
from yolojax.ops.nms import batched_nms


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
    level_picks, level_ids, start = [], [], 0
    for level, count in enumerate(anchors_per_level):
        _, top = lax.top_k(objectness[:, start:start + count], min(pre_nms_top_n, count))
        level_picks.append(top + start)
        level_ids.append(jnp.full(top.shape[1:], level, jnp.int32))
        start += count
    picks, levels = jnp.concatenate(level_picks, axis=1), jnp.concatenate(level_ids)
    boxes = jnp.take_along_axis(proposals, picks[..., None], axis=1)
    scores = jax.nn.sigmoid(jnp.take_along_axis(objectness, picks, axis=1))
    image_hw = jnp.broadcast_to(jnp.asarray(image_hw, boxes.dtype), (boxes.shape[0], 2))
    boxes = clip_boxes_to_image(boxes, image_hw[:, None, :])
    candidate = remove_small_boxes(boxes, min_size) & (scores >= score_thresh)

    def one_image(b, s, m):
        keep, valid = batched_nms(b, s, levels, nms_thresh, post_nms_top_n, candidate_mask=m)
        return b[keep], jnp.where(valid, s[keep], 0.0), valid

    return jax.vmap(one_image)(boxes, scores, candidate)


def decode_proposals(deltas, anchors):
    """(b, a, 4) RPN deltas + (a, 4) anchors -> (b, a, 4) xyxy pixel boxes (not differentiated, as in the reference)."""
    return decode_boxes(lax.stop_gradient(deltas), anchors[None], RPN_WEIGHTS)

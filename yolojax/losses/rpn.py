"""Two-stage losses with torchvision's normalisations: the RPN loss and the Fast R-CNN (RoI head) loss.

Both take padded per-image arrays plus sampling masks; the sums run over all images of the batch, the way the
reference concatenates the sampled elements of every image before normalising.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

BOX_BETA = 1.0 / 9.0


def smooth_l1(diff, beta: float):
    """Elementwise smooth-L1 (Huber / beta): `0.5 x^2 / beta` for `|x| < beta`, else `|x| - 0.5 beta`."""
    ad = jnp.abs(diff)
    return jnp.where(ad < beta, 0.5 * ad * ad / beta, ad - 0.5 * beta)


def rpn_loss(objectness_logits, pred_deltas, labels, target_deltas, positive, negative, beta: float = BOX_BETA):
    """RPN objectness BCE and box smooth-L1 (`RegionProposalNetwork.compute_loss`).

    Args:
      objectness_logits: (b, a) raw scores.
      pred_deltas: (b, a, 4) predicted deltas.
      labels: (b, a) float, 1 foreground, 0 background (others ignored).
      target_deltas: (b, a, 4) deltas of the matched ground truth (RPN coder weights).
      positive, negative: (b, a) bool sampled masks.
    Returns:
      objectness_loss: BCE with logits, mean over the sampled anchors of the batch;
      box_loss: smooth-L1 (beta 1/9) summed over sampled positives, divided by the number of sampled anchors.
    """
    sampled = positive | negative
    num_sampled = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
    bce = jnp.maximum(objectness_logits, 0) - objectness_logits * labels + jnp.log1p(
        jnp.exp(-jnp.abs(objectness_logits)))
    objectness_loss = jnp.sum(jnp.where(sampled, bce, 0.0)) / num_sampled
    box = jnp.sum(smooth_l1(pred_deltas - target_deltas, beta), axis=-1)
    box_loss = jnp.sum(jnp.where(positive, box, 0.0)) / num_sampled
    return objectness_loss, box_loss


def fast_rcnn_loss(class_logits, pred_deltas, labels, target_deltas, sampled, beta: float = BOX_BETA):
    """RoI-head classification CE and class-specific box smooth-L1 (`torchvision ... roi_heads.fastrcnn_loss`).

    Args:
      class_logits: (b, r, k + 1) scores, column 0 is background.
      pred_deltas: (b, r, (k + 1) * 4) per-class deltas (RoI-head coder weights).
      labels: (b, r) int, class in [1, k] for positives, 0 background.
      target_deltas: (b, r, 4) deltas of each RoI's matched ground truth.
      sampled: (b, r) bool, the sampled RoIs (padding rows False).
    Returns:
      classification_loss: cross-entropy, mean over sampled RoIs;
      box_loss: smooth-L1 (beta 1/9) of the deltas of each positive's own class, summed, divided by the number
      of sampled RoIs.
    """
    num_sampled = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
    safe_labels = jnp.maximum(labels, 0)
    log_probs = jax.nn.log_softmax(class_logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    classification_loss = jnp.sum(jnp.where(sampled, nll, 0.0)) / num_sampled
    per_class = pred_deltas.reshape(*pred_deltas.shape[:-1], -1, 4)
    own = jnp.take_along_axis(per_class, safe_labels[..., None, None], axis=-2)[..., 0, :]
    box = jnp.sum(smooth_l1(own - target_deltas, beta), axis=-1)
    box_loss = jnp.sum(jnp.where(sampled & (labels > 0), box, 0.0)) / num_sampled
    return classification_loss, box_loss

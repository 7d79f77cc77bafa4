"""YOLOv8 post-processing: confidence filter + class-aware NMS with fixed output shapes, and box rescaling.

`non_max_suppression` selects the same detections as the reference's `ultralytics.utils.ops.non_max_suppression`
(given the same predictions, barring exact score ties), but every output is padded to `max_det` rows with a
`valid` mask so that it runs inside jit for a whole batch.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.ops.boxes import xywh2xyxy
from yolojax.ops.nms import nms

MAX_WH = 7680  # class offset (pixels) that keeps boxes of different classes apart in class-aware NMS


def _candidates(class_probs, conf_thres, multi_label, classes, max_nms):
    """One image's candidates, capped at `max_nms` by score.

    Args:
      class_probs: (a, nc).
    Returns:
      anchor: (k,) int32 anchor of each candidate; class_id: (k,) int32; score: (k,); mask: (k,) bool, where
      k = min(max_nms, a) for best-class-only and min(max_nms, a * nc) for multi-label.
    """
    a, nc = class_probs.shape
    if multi_label:
        flat = class_probs.reshape(-1)  # anchor-major, then class: the reference's (i, j) pair order
        anchor = jnp.arange(a * nc, dtype=jnp.int32) // nc
        class_id = jnp.arange(a * nc, dtype=jnp.int32) % nc
        score = flat
    else:
        anchor = jnp.arange(a, dtype=jnp.int32)
        class_id = jnp.argmax(class_probs, axis=-1).astype(jnp.int32)
        score = jnp.max(class_probs, axis=-1)
    mask = score > conf_thres
    if classes is not None:
        mask &= jnp.isin(class_id, jnp.asarray(classes, jnp.int32))
    if score.shape[0] > max_nms:  # keep the `max_nms` best, as the reference does when it has too many
        _, top = jax.lax.top_k(jnp.where(mask, score, -jnp.inf), max_nms)
        anchor, class_id, score, mask = anchor[top], class_id[top], score[top], mask[top]
    return anchor, class_id, score, mask


def nms_one_image(boxes_xyxy, class_probs, conf_thres, iou_thres, max_det, multi_label, agnostic, max_nms,
                  classes, tile_size):
    """`non_max_suppression` of one image (no batch axis): boxes_xyxy (a, 4) pixels, class_probs (a, nc) float32,
    the settings positional (thresholds may be traced, as the ONNX export's are). Returns its dict without the batch
    axis: boxes (max_det, 4), scores, classes, valid (max_det,)."""
    anchor, class_id, score, mask = _candidates(class_probs, conf_thres, multi_label, classes, max_nms)
    boxes = boxes_xyxy[anchor]
    offset = 0.0 if agnostic else class_id.astype(boxes.dtype)[:, None] * MAX_WH
    keep, valid = nms(boxes + offset, score, iou_thres, max_det, candidate_mask=mask, tile_size=tile_size)
    return {
        "boxes": jnp.where(valid[:, None], boxes[keep], 0.0),
        "scores": jnp.where(valid, score[keep], 0.0),
        "classes": jnp.where(valid, class_id[keep], 0),
        "valid": valid,
    }


def non_max_suppression(boxes_xywh, class_probs, *, conf_thres: float = 0.25, iou_thres: float = 0.7,
                        max_det: int = 300, multi_label: bool = False, agnostic: bool = False,
                        max_nms: int = 30000, classes: Sequence[int] | None = None, tile_size: int = 512):
    """Confidence filter and per-class greedy NMS for a batch of YOLOv8 predictions.

    A candidate is an anchor's best class (or, with `multi_label`, every (anchor, class) pair) whose probability
    is strictly above `conf_thres`; with `classes`, the candidate's class must be in it. At most `max_nms`
    highest-scoring candidates enter NMS; boxes of different classes never suppress each other unless `agnostic`.
    Typical settings: predict conf 0.25 / iou 0.7; validation conf 0.001 / iou 0.7 / max_det 300.

    Args:
      boxes_xywh: (b, a, 4) xywh, pixels of the network input.
      class_probs: (b, a, nc) probabilities in [0, 1].
      conf_thres, iou_thres, max_det, multi_label, agnostic, max_nms, classes: static settings (see above).
      tile_size: NMS candidates per step (`yolojax.ops.nms.nms`); speed only, results do not depend on it.
    Returns:
      dict of fixed-shape arrays, rows in descending score, padded with zeros where not valid:
        boxes (b, max_det, 4) xyxy pixels, scores (b, max_det) float32, classes (b, max_det) int32,
        valid (b, max_det) bool.
    """
    if not (0.0 <= conf_thres <= 1.0 and 0.0 <= iou_thres <= 1.0):
        raise ValueError(f"non_max_suppression: conf_thres {conf_thres} and iou_thres {iou_thres} must be in [0, 1]")
    if boxes_xywh.shape[:2] != class_probs.shape[:2] or boxes_xywh.shape[-1] != 4:
        raise ValueError(f"non_max_suppression: boxes {boxes_xywh.shape} and class_probs {class_probs.shape} "
                         "must be (b, a, 4) and (b, a, nc)")
    multi_label = multi_label and class_probs.shape[-1] > 1
    boxes_xyxy = xywh2xyxy(boxes_xywh.astype(jnp.float32))
    run = lambda b, p: nms_one_image(b, p.astype(jnp.float32), conf_thres, iou_thres, max_det, multi_label,
                                     agnostic, max_nms, None if classes is None else tuple(classes), tile_size)
    return jax.vmap(run)(boxes_xyxy, class_probs)


def scale_boxes(boxes_xyxy, orig_hw, gain, pad):
    """Boxes on the letterboxed network input -> boxes on the original image, clipped to it (the one inverse of
    the letterbox: predict, val and the ground truth of val batches all use it).

    Args:
      boxes_xyxy: (..., 4) xyxy pixels of the network input (numpy or jax).
      orig_hw: (..., 2) (h0, w0) of the original image(s), broadcastable against the boxes' leading axes.
      gain: (...) the letterbox scale r, likewise broadcastable (a number for one image).
      pad: (..., 2) (dw, dh) pixels added on the left and top.
    Returns:
      (..., 4) xyxy pixels of the original image, in [0, w0] x [0, h0].
    """
    xp = jnp if isinstance(boxes_xyxy, jax.Array) else np
    dtype = boxes_xyxy.dtype
    pad, orig_hw, gain = (xp.asarray(v, dtype) for v in (pad, orig_hw, gain))
    offset = xp.concatenate([pad, pad], axis=-1)
    upper = xp.concatenate([orig_hw[..., ::-1], orig_hw[..., ::-1]], axis=-1)
    return xp.clip((boxes_xyxy - offset) / gain[..., None], 0, upper)


def letterbox_gain_pad(input_hw: tuple[int, int], orig_hw):
    """Scale and whole-pixel padding of a centred letterbox, recomputed from the shapes, as the reference's
    predictor does when it maps boxes back (pad = round(half the slack - 0.1) on each axis).

    Args:
      input_hw: (h, w) of the network input; orig_hw: (..., 2) (h0, w0) of the original image(s) (numpy dtype
        kept: float32 in gives float32 out).
    Returns:
      gain (...) and pad (..., 2) (dw, dh) whole pixels.
    """
    orig_hw = np.asarray(orig_hw)
    height, width = input_hw
    gain = np.minimum(height / orig_hw[..., 0], width / orig_hw[..., 1])
    pad = np.stack([np.round((width - orig_hw[..., 1] * gain) / 2 - 0.1),
                    np.round((height - orig_hw[..., 0] * gain) / 2 - 0.1)], axis=-1).astype(gain.dtype)
    return gain, pad

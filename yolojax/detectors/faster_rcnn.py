"""The Faster R-CNN-style two-stage detector as a task (`yolojax.detectors.protocol.DetectionTask`): the modules of
`yolojax.models.two_stage`, RPN targets (`yolojax.assign.rpn`) and proposals (`yolojax.ops.proposals`), RoI sampling
and Align, the RPN and Fast R-CNN losses, and torchvision's detection postprocess with fixed shapes."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from yolojax.assign.matcher import proposal_labels, sample_balanced
from yolojax.assign.rpn import rpn_targets
from yolojax.losses.rpn import fast_rcnn_loss, rpn_loss
from yolojax.models.two_stage import FasterRCNN
from yolojax.ops.anchors import rpn_grid_anchors
from yolojax.ops.box_coder import (
    ROI_HEAD_WEIGHTS,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    remove_small_boxes,
)
from yolojax.ops.boxes import xywh2xyxy
from yolojax.ops.decode import STRIDES
from yolojax.ops.nms import batched_nms
from yolojax.ops.proposals import decode_proposals, filter_proposals
from yolojax.ops.roi import roi_align_per_image


def _tuple(x):
    return tuple(_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclasses.dataclass(frozen=True)
class FasterRCNNTask:
    """Two-stage detector task (`yolojax.detectors.protocol.DetectionTask`). Defaults follow torchvision's Faster R-CNN,
    except anchor sizes, which suit the image size (the faster_rcnn model config sets them for 128 px).

    backbone: "yolov8" (backbone + neck of YOLOv8 at `scale`) or "tiny" (five convs, for tests).
    rpn_pre_nms_top_n / rpn_post_nms_top_n: (train, test). roi_batch: sampled RoIs per image (0.25 positive).
    roi_align_method: "matmul" (deterministic gradient) or "gather" (fewer FLOPs; see `yolojax.ops.roi.roi_align`).
    box_score_thresh: extra floor on detection scores at inference (on top of predict's `conf`).
    """

    num_classes: int = 80
    dtype: Any = jnp.float32
    backbone: str = "yolov8"
    scale: str = "n"
    width: int = 128
    hidden: int = 1024
    anchor_sizes: tuple = ((32,), (64,), (128,))
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n: tuple = (2000, 1000)
    rpn_post_nms_top_n: tuple = (2000, 1000)
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    roi_batch: int = 512
    roi_positive_fraction: float = 0.25
    roi_fg_iou_thresh: float = 0.5
    roi_bg_iou_thresh: float = 0.5
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    roi_align_method: str = "matmul"
    box_score_thresh: float = 0.0
    name: str = "faster_rcnn"
    loss_names: tuple = ("rpn_obj", "rpn_box", "cls", "box")

    def __post_init__(self):
        for field in ("anchor_sizes", "aspect_ratios", "rpn_pre_nms_top_n", "rpn_post_nms_top_n", "loss_names"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        if len(self.anchor_sizes) != len(STRIDES):
            raise ValueError(f"FasterRCNNTask: anchor_sizes needs one tuple per level {STRIDES}, "
                             f"got {self.anchor_sizes!r}")
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError(f"FasterRCNNTask: every level needs the same number of anchor sizes, got "
                             f"{self.anchor_sizes!r}")

    def spec(self) -> dict:
        """JSON-able model config that `yolojax.detectors.build_task(spec, num_classes)` turns back into this
        task (for weight export: the anchors and widths must match the trained parameters)."""
        skip = {"num_classes", "dtype", "name", "loss_names"}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {"family": self.name, **fields}

    @property
    def model(self) -> FasterRCNN:
        return FasterRCNN(self.num_classes, len(self.anchor_sizes[0]) * len(self.aspect_ratios), self.scale,
                          self.width, self.hidden, self.backbone, self.dtype)

    def anchors(self, image_hw):
        """(a, 4) xyxy anchors and per-level counts for images of `image_hw` (multiples of 32)."""
        shapes = [(image_hw[0] // s, image_hw[1] // s) for s in STRIDES]
        return rpn_grid_anchors(shapes, STRIDES, self.anchor_sizes, (self.aspect_ratios,) * len(STRIDES))

    def init(self, key, image_hw):
        model = self.model
        variables = model.init(key, jnp.zeros((1, *image_hw, 3), jnp.float32), train=False)
        roi = jnp.zeros((1, 1, self.roi_output_size, self.roi_output_size, self.width), jnp.float32)
        head = model.init(key, roi, method=FasterRCNN.box_head)
        variables = dict(variables)
        variables["params"] = {**variables["params"], **head["params"]}
        return variables

    def _proposals(self, objectness, deltas, image_hw, train: bool):
        anchors, per_level = self.anchors(image_hw)
        stage = 0 if train else 1
        return filter_proposals(decode_proposals(deltas, anchors), objectness, image_hw, per_level,
                                pre_nms_top_n=self.rpn_pre_nms_top_n[stage],
                                post_nms_top_n=self.rpn_post_nms_top_n[stage], nms_thresh=self.rpn_nms_thresh)

    def _pool(self, p3, boxes):
        return roi_align_per_image(p3, boxes, self.roi_output_size, 1.0 / STRIDES[0], self.roi_sampling_ratio,
                                   aligned=False, precision=None, method=self.roi_align_method)

    def loss_fn(self, params, model_state, batch, key):
        images = batch["images"].astype(self.dtype) / 255.0
        b, h, w = images.shape[:3]
        gt_boxes = xywh2xyxy(batch["bboxes"].astype(jnp.float32)) * jnp.array([w, h, w, h], jnp.float32)
        gt_mask, gt_classes = batch["mask"], batch["cls"].astype(jnp.int32) + 1  # 0 is background
        model = self.model
        (levels, objectness, deltas), updated = model.apply({"params": params, **model_state}, images, train=True,
                                                            mutable=["batch_stats"])
        rpn_key, roi_key = jax.random.split(key)
        anchors, _ = self.anchors((h, w))
        labels, positive, negative, target_deltas = rpn_targets(
            rpn_key, anchors, gt_boxes, gt_mask, fg_iou_thresh=self.rpn_fg_iou_thresh,
            bg_iou_thresh=self.rpn_bg_iou_thresh, batch_size_per_image=self.rpn_batch_size_per_image,
            positive_fraction=self.rpn_positive_fraction)
        obj_loss, rpn_box_loss = rpn_loss(objectness, deltas, labels, target_deltas, positive, negative)

        proposals, _, valid = self._proposals(objectness, deltas, (h, w), train=True)
        rois, roi_labels, roi_targets, sampled = self._sample_rois(roi_key, proposals, valid, gt_boxes, gt_classes,
                                                                   gt_mask)
        logits, box_deltas = model.apply({"params": params}, self._pool(levels[0], rois), method=FasterRCNN.box_head)
        cls_loss, box_loss = fast_rcnn_loss(logits, box_deltas, roi_labels, roi_targets, sampled)
        items = jnp.stack([obj_loss, rpn_box_loss, cls_loss, box_loss])
        return jnp.sum(items) * b, {"items": items, "model_state": dict(updated)}

    def _sample_rois(self, key, proposals, valid, gt_boxes, gt_classes, gt_mask):
        """Proposals + ground truth -> `roi_batch` sampled RoIs per image with labels and RoI-coder targets."""
        candidates = jnp.concatenate([proposals, gt_boxes], axis=1)
        candidate_mask = jnp.concatenate([valid, gt_mask], axis=1)
        labels, matched = jax.vmap(proposal_labels, in_axes=(0, 0, 0, 0, 0, None, None))(
            gt_boxes, gt_classes, gt_mask, candidates, candidate_mask, self.roi_fg_iou_thresh, self.roi_bg_iou_thresh)
        count = min(self.roi_batch, candidates.shape[1])
        keys = jax.random.split(key, candidates.shape[0])
        _, _, order, sampled = jax.vmap(lambda k, lab: sample_balanced(k, lab, count, self.roi_positive_fraction))(
            keys, labels)
        take = lambda x: jnp.take_along_axis(x, order.reshape(*order.shape, *(1,) * (x.ndim - 2)), axis=1)
        rois, roi_labels, roi_matched = take(candidates), take(labels), take(matched)
        roi_labels = jnp.where(sampled, roi_labels, 0)
        targets = encode_boxes(roi_matched, rois, ROI_HEAD_WEIGHTS)
        targets = jnp.where((roi_labels > 0)[..., None], targets, 0.0)  # no inf / nan from empty boxes
        return jax.lax.stop_gradient(rois), roi_labels, targets, sampled

    def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=True, classes=None,
                agnostic=False):
        """Detections with fixed shapes. Per-class boxes make this multi-label by construction (torchvision's
        postprocess_detections), so `multi_label` is accepted for the protocol and has no effect. classes: keep only
        these class ids (before NMS). agnostic NMS is not defined for per-class boxes: ValueError."""
        del multi_label
        if agnostic:
            raise ValueError("agnostic_nms is not available for faster_rcnn (its boxes are per class)")
        x = images.astype(self.dtype) / 255.0
        b, h, w = x.shape[:3]
        model = self.model
        levels, objectness, deltas = model.apply(variables, x, train=False)
        proposals, _, valid = self._proposals(objectness, deltas, (h, w), train=False)
        logits, box_deltas = model.apply({"params": variables["params"]}, self._pool(levels[0], proposals),
                                         method=FasterRCNN.box_head)
        return detections(logits, box_deltas, proposals, valid, (h, w), conf=max(conf, self.box_score_thresh),
                          iou=iou, max_det=max_det, classes=classes)


def detections(class_logits, box_deltas, proposals, proposal_valid, image_hw, *, conf, iou, max_det, classes=None):
    """Box-head outputs -> final detections (torchvision's `postprocess_detections`, fixed shapes).

    Args:
      class_logits: (b, r, k + 1); box_deltas: (b, r, (k + 1) * 4); proposals: (b, r, 4) xyxy pixels;
      proposal_valid: (b, r) bool; image_hw: (height, width).
      conf: keep scores > conf; iou: per-class NMS threshold; max_det: rows per image; classes: class ids to keep
      (None: all).
    Returns:
      dict boxes (b, max_det, 4) xyxy pixels, scores (b, max_det), classes (b, max_det) int32 in [0, k),
      valid (b, max_det) bool.
    """
    b, r, k1 = class_logits.shape
    probs = jax.nn.softmax(class_logits, axis=-1)[..., 1:]  # drop background
    boxes = decode_boxes(box_deltas.reshape(b, r, k1, 4)[:, :, 1:], proposals[:, :, None, :], ROI_HEAD_WEIGHTS)
    boxes = clip_boxes_to_image(boxes, image_hw).reshape(b, -1, 4)
    scores = probs.reshape(b, -1)
    classes_of = jnp.broadcast_to(jnp.arange(k1 - 1, dtype=jnp.int32), (b, r, k1 - 1)).reshape(b, -1)
    candidate = (scores > conf) & remove_small_boxes(boxes, 1e-2) & jnp.repeat(proposal_valid, k1 - 1, axis=1)
    if classes is not None:
        candidate &= jnp.isin(classes_of, jnp.asarray(classes, jnp.int32))

    def one_image(bx, sc, cl, m):
        keep, valid = batched_nms(bx, sc, cl, iou, max_det, candidate_mask=m)
        return {"boxes": jnp.where(valid[:, None], bx[keep], 0.0), "scores": jnp.where(valid, sc[keep], 0.0),
                "classes": jnp.where(valid, cl[keep], 0), "valid": valid}

    return jax.vmap(one_image)(boxes, scores, classes_of, candidate)

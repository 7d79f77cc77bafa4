"""The functions an export holds: a YOLOv8 forward on uint8 images with BatchNorm folded into the convolutions
(as the reference's export fuses them), and optionally the NMS of `yolojax.detectors.postprocess` after it.

Graph contract (ONNX and StableHLO alike):
  inputs:  images (b, h, w, 3) uint8 RGB, letterboxed; with NMS also conf () and iou () float32 (run-time
           thresholds: keep scores > conf, suppress at IoU > iou)
  outputs without NMS: boxes_xywh (b, a, 4) float32 xywh pixels of the input, class_probs (b, a, nc) float32
  outputs with NMS:    boxes (b, max_det, 4) float32 xyxy pixels, scores (b, max_det) float32,
                       classes (b, max_det) int32, valid (b, max_det) bool (rows in descending score, zero where
                       not valid)
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from yolojax.detectors.postprocess import nms_one_image
from yolojax.models.inference import apply_folded, fold_batchnorm
from yolojax.ops.boxes import xywh2xyxy

RAW_OUTPUTS = ("boxes_xywh", "class_probs")
NMS_OUTPUTS = ("boxes", "scores", "classes", "valid")
MAX_NMS = 30000  # candidates entering NMS, as `non_max_suppression`'s default
NMS_TILE = 512


def yolo_forward(task, variables: dict) -> Callable:
    """`images (b, h, w, 3) uint8 -> (boxes_xywh (b, a, 4), class_probs (b, a, nc))`, float32, BatchNorm folded."""
    # float32 jax arrays throughout: jax2onnx's Conv casts a jax kernel (not a numpy one) to the compute dtype
    folded = fold_batchnorm(jax.tree.map(jnp.asarray, variables))
    model = task.model.clone(inference_blocks=False)

    def forward(images):
        return apply_folded(model, folded, images.astype(task.dtype) / 255.0, train=False)

    return forward


def image_nms(max_det: int) -> Callable:
    """`(boxes_xywh (a, 4), class_probs (a, nc), conf (), iou ()) -> (boxes, scores, classes, valid)` of one image:
    `non_max_suppression`'s rows (best class per anchor, class-aware) with the thresholds as arrays."""

    def run(boxes_xywh, class_probs, conf, iou):
        rows = nms_one_image(xywh2xyxy(boxes_xywh.astype(jnp.float32)), class_probs.astype(jnp.float32), conf, iou,
                             max_det, False, False, MAX_NMS, None, NMS_TILE)
        return tuple(rows[k] for k in NMS_OUTPUTS)

    return run


def traced_per_image(fn: Callable, num_anchors: int, num_classes: int) -> Callable:
    """`fn` of one image, traced once to a jaxpr and replayed: what jax2onnx then sees is plain lax primitives
    (its own patches of jnp functions never run), and `jax.lax.map` over it becomes one ONNX Loop over images."""
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((num_anchors, 4), jnp.float32),
                                jax.ShapeDtypeStruct((num_anchors, num_classes), jnp.float32),
                                jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((), jnp.float32))
    return lambda *args: tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args))


def num_anchors(image_hw: tuple[int, int], strides=(8, 16, 32)) -> int:
    """Anchors of a YOLOv8 input of (h, w) pixels: one per cell of each level."""
    return sum((image_hw[0] // s) * (image_hw[1] // s) for s in strides)


def detector_function(task, variables: dict, image_hw: tuple[int, int], *, nms: bool, max_det: int = 300,
                      loop_images: bool = False) -> Callable:
    """The exported function (module docstring): `images -> raw outputs`, or with nms
    `(images, conf, iou) -> NMS rows`. loop_images: NMS image by image through a traced jaxpr (`traced_per_image`,
    for ONNX) instead of `jax.vmap`."""
    forward = yolo_forward(task, variables)
    if not nms:
        return forward
    one = image_nms(max_det)
    if loop_images:
        one = traced_per_image(one, num_anchors(image_hw), task.num_classes)

    def detect(images, conf, iou):
        boxes_xywh, class_probs = forward(images)
        conf, iou = jnp.asarray(conf, jnp.float32), jnp.asarray(iou, jnp.float32)
        if loop_images:
            return jax.lax.map(lambda pair: one(pair[0], pair[1], conf, iou), (boxes_xywh, class_probs))
        return jax.vmap(one, in_axes=(0, 0, None, None))(boxes_xywh, class_probs, conf, iou)

    return detect

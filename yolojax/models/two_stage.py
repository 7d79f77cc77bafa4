"""Faster R-CNN-style two-stage detector's Flax modules: YOLOv8 backbone + neck, RPN head, box head. The task
(targets, losses, proposals, detections) is `yolojax.detectors.faster_rcnn`.

Data flow of one training step (all static shapes, one jit):
  images -> YOLOv8 backbone/neck (P3, P4, P5) -> 1x1 laterals to a common width
         -> RPN head -> anchor targets (IoU matcher 0.7 / 0.3 + balanced sampler 256 x 0.5) -> RPN loss
         -> proposals (per-level top-k, decode, clip, NMS 0.7, post_nms_top_n) + ground-truth boxes
         -> RoI targets (matcher 0.5, sampler roi_batch x 0.25) -> RoI Align 7x7 on P3 -> two FC 1024
         -> class logits + per-class deltas -> Fast R-CNN loss.
Inference: test-time proposals -> box head -> softmax, per-class decode, clip, per-class NMS -> max_det rows.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolojax.models.layers import SPPF, C2f, ConvBNAct, upsample_nearest2x
from yolojax.models.rpn import RPNHead
from yolojax.models.yolov8 import scaled_channels, scaled_repeats


class YOLOv8Features(nn.Module):
    """The backbone and PAN neck of `yolojax.models.yolov8.YOLOv8` (same layers and names), without the head.

    (b, h, w, 3) float images in [0, 1] -> [P3, P4, P5], strides 8 / 16 / 32, channels of the scale.
    """

    scale: str = "n"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda base, k, s, i: ConvBNAct(scaled_channels(base, self.scale), k, s, dtype=self.dtype,
                                               name=f"model_{i}")
        c2f = lambda base, n, shortcut, i: C2f(scaled_channels(base, self.scale), scaled_repeats(n, self.scale),
                                               shortcut, dtype=self.dtype, name=f"model_{i}")
        x = c2f(128, 3, True, 2)(conv(128, 3, 2, 1)(conv(64, 3, 2, 0)(x, train), train), train)
        p3 = c2f(256, 6, True, 4)(conv(256, 3, 2, 3)(x, train), train)
        p4 = c2f(512, 6, True, 6)(conv(512, 3, 2, 5)(p3, train), train)
        x = c2f(1024, 3, True, 8)(conv(1024, 3, 2, 7)(p4, train), train)
        p5 = SPPF(scaled_channels(1024, self.scale), dtype=self.dtype, name="model_9")(x, train)
        h4 = c2f(512, 3, False, 12)(jnp.concatenate([upsample_nearest2x(p5), p4], -1), train)
        out3 = c2f(256, 3, False, 15)(jnp.concatenate([upsample_nearest2x(h4), p3], -1), train)
        out4 = c2f(512, 3, False, 18)(jnp.concatenate([conv(256, 3, 2, 16)(out3, train), h4], -1), train)
        out5 = c2f(1024, 3, False, 21)(jnp.concatenate([conv(512, 3, 2, 19)(out4, train), p5], -1), train)
        return [out3, out4, out5]


class TinyFeatures(nn.Module):
    """A five-conv backbone (stride 2 each) for tests and quick CPU checks: [P3, P4, P5] with `base` channels."""

    base: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        levels = []
        for i, (mult, keep) in enumerate([(1, False), (2, False), (4, True), (4, True), (4, True)]):
            x = ConvBNAct(self.base * mult, 3, 2, dtype=self.dtype, name=f"conv_{i}")(x, train)
            if keep:
                levels.append(x)
        return levels


class BoxHead(nn.Module):
    """RoI features (n, r, 7, 7, c) -> two FC layers -> class logits (n, r, k + 1) and deltas (n, r, (k + 1) * 4)."""

    num_classes: int
    hidden: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, roi_features):
        dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name, **kw)
        x = roi_features.reshape(*roi_features.shape[:2], -1)
        x = nn.relu(dense(self.hidden, "fc6")(x))
        x = nn.relu(dense(self.hidden, "fc7")(x))
        logits = dense(self.num_classes + 1, "cls_score", kernel_init=nn.initializers.normal(0.01))(x)
        deltas = dense((self.num_classes + 1) * 4, "bbox_pred", kernel_init=nn.initializers.normal(0.001))(x)
        return logits.astype(jnp.float32), deltas.astype(jnp.float32)


class FasterRCNN(nn.Module):
    """Backbone/neck + laterals + RPN head + box head. Proposal logic lives in `FasterRCNNTask`.

    `__call__(images, train)` -> (levels, objectness (b, a), rpn_deltas (b, a, 4)); `box_head(roi_features)`.
    """

    num_classes: int
    num_anchors: int
    scale: str = "n"
    width: int = 128
    hidden: int = 1024
    backbone_name: str = "yolov8"
    dtype: Any = jnp.float32

    def setup(self):
        if self.backbone_name == "yolov8":
            self.backbone = YOLOv8Features(self.scale, self.dtype)
        elif self.backbone_name == "tiny":
            self.backbone = TinyFeatures(dtype=self.dtype)
        else:
            raise ValueError(f"FasterRCNN: backbone must be 'yolov8' or 'tiny', got {self.backbone_name!r}")
        self.laterals = [nn.Conv(self.width, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name=f"lateral_{i}")
                         for i in range(3)]
        self.rpn = RPNHead(self.num_anchors, self.dtype)
        self.head = BoxHead(self.num_classes, self.hidden, self.dtype)

    def __call__(self, images, train: bool = False):
        levels = [lateral(x) for lateral, x in zip(self.laterals, self.backbone(images, train))]
        objectness, deltas = self.rpn(levels)
        return levels, objectness, deltas

    def box_head(self, roi_features):
        return self.head(roi_features)

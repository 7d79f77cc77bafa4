"""YOLOv8 detection model (backbone, PAN-FPN neck, decoupled anchor-free head) as one Flax linen module.

Layout follows the reference's `yolov8.yaml`: layer `i` of its list is the submodule `model_<i>` here (layers
without parameters — upsample, concat — keep their index but have no submodule), so reference weights map 1:1.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolojax.models.layers import (
    SPPF,
    C2f,
    ConvBNAct,
    runs_on_pixel_blocks,
    torch_conv_init,
    upsample_nearest2x,
)
from yolojax.ops.decode import STRIDES, decode_maps

# scale -> (depth multiple, width multiple, max channels), as in the reference's yolov8.yaml
SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}


def scaled_channels(channels: int, scale: str) -> int:
    """Base channel count -> this scale's count: min(c, max_channels) * width, rounded up to a multiple of 8."""
    _, width, max_channels = SCALES[scale]
    return int(math.ceil(min(channels, max_channels) * width / 8) * 8)


def scaled_repeats(repeats: int, scale: str) -> int:
    """Base repeat count -> this scale's count (a single layer is never repeated)."""
    depth = SCALES[scale][0]
    return max(round(repeats * depth), 1) if repeats > 1 else repeats


def head_channels(level_channels: tuple[int, ...], num_classes: int, reg_max: int) -> tuple[int, int]:
    """Hidden widths (box branch, class branch) of the detect head, from the P3 channel count."""
    c3 = level_channels[0]
    return max(16, c3 // 4, 4 * reg_max), max(c3, min(num_classes, 100))


def class_bias_init(num_classes: int, stride: int, image_size: int = 640) -> float:
    """Initial class logit: prior of ~5 objects per 640 image spread over classes and cells of this level."""
    return math.log(5 / num_classes / (image_size / stride) ** 2)


class YOLOv8(nn.Module):
    """YOLOv8 detector.

    Attributes:
      scale: one of "n", "s", "m", "l", "x".
      num_classes: number of classes (nc).
      reg_max: DFL bins per box side.
      dtype: compute dtype (bfloat16 on GPU); parameters and BatchNorm statistics are always float32.
      inference_blocks: with train=False, run the narrow stem and C2f blocks over 2x2 pixel blocks as training
        does, from BLOCKS_MIN_INFERENCE_BATCH images on (`runs_on_pixel_blocks`), and the narrow half-precision 3x3
        stride-2 convolutions over blocks inside (`Conv.stride2_by_blocks`) at every batch. The same sums in another
        order. False (the export) keeps every layer on pixels.

    Call `apply(variables, images, train=...)`, images (b, h, w, 3) float in [0, 1], h and w multiples of 32:
      train=True (pass `mutable=["batch_stats"]`): list of 3 raw maps, level P3/P4/P5 (strides 8, 16, 32), each
        (b, h/s, w/s, 4 * reg_max + nc): DFL box logits (side-major) then class logits, in `dtype`.
      train=False: (boxes (b, a, 4) xywh pixels, class_probs (b, a, nc)), float32, a = sum over levels of
        (h/s) * (w/s); anchors level by level, row-major inside a level (the reference's order).
    """

    scale: str = "n"
    num_classes: int = 80
    reg_max: int = 16
    dtype: Any = jnp.float32
    inference_blocks: bool = True
    strides = STRIDES

    def _conv(self, base, kernel, stride, index, blocks_allowed: bool, **blocks):
        return ConvBNAct(scaled_channels(base, self.scale), kernel, stride, dtype=self.dtype, **blocks,
                         stride2_by_blocks=blocks_allowed, name=f"model_{index}")

    def _c2f(self, base, repeats, shortcut, index, on_blocks):
        return C2f(scaled_channels(base, self.scale), scaled_repeats(repeats, self.scale), shortcut,
                   dtype=self.dtype, on_blocks=on_blocks, name=f"model_{index}")

    @nn.compact
    def __call__(self, images, train: bool = False):
        if self.scale not in SCALES:
            raise ValueError(f"YOLOv8: scale must be one of {tuple(SCALES)}, got {self.scale!r}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"YOLOv8: images must be (b, h, w, 3) NHWC, got shape {images.shape}")
        if images.shape[1] % 32 or images.shape[2] % 32:
            raise ValueError(f"YOLOv8: image height and width must be multiples of 32, got {images.shape[1:3]}")
        x = images.astype(self.dtype)
        # backbone; a narrow stem hands its map to layer 1 in 2x2 pixel blocks (images are multiples of 32)
        blocks_allowed = train or self.inference_blocks
        stem_blocks = blocks_allowed and runs_on_pixel_blocks(x, scaled_channels(64, self.scale), self.dtype, train)
        c2f_blocks = "auto" if blocks_allowed else False
        x = self._conv(64, 3, 2, 0, blocks_allowed, blocks_out=stem_blocks)(x, train)
        x = self._conv(128, 3, 2, 1, blocks_allowed, blocks_in=stem_blocks)(x, train)
        x = self._c2f(128, 3, True, 2, c2f_blocks)(x, train)
        x = self._conv(256, 3, 2, 3, blocks_allowed)(x, train)
        p3 = self._c2f(256, 6, True, 4, c2f_blocks)(x, train)
        x = self._conv(512, 3, 2, 5, blocks_allowed)(p3, train)
        p4 = self._c2f(512, 6, True, 6, c2f_blocks)(x, train)
        x = self._conv(1024, 3, 2, 7, blocks_allowed)(p4, train)
        x = self._c2f(1024, 3, True, 8, c2f_blocks)(x, train)
        p5 = SPPF(scaled_channels(1024, self.scale), dtype=self.dtype, name="model_9")(x, train)
        # neck: top-down (layers 10-15), then bottom-up (16-21)
        x = jnp.concatenate([upsample_nearest2x(p5), p4], axis=-1)
        h4 = self._c2f(512, 3, False, 12, c2f_blocks)(x, train)
        x = jnp.concatenate([upsample_nearest2x(h4), p3], axis=-1)
        out3 = self._c2f(256, 3, False, 15, c2f_blocks)(x, train)
        x = jnp.concatenate([self._conv(256, 3, 2, 16, blocks_allowed)(out3, train), h4], axis=-1)
        out4 = self._c2f(512, 3, False, 18, c2f_blocks)(x, train)
        x = jnp.concatenate([self._conv(512, 3, 2, 19, blocks_allowed)(out4, train), p5], axis=-1)
        out5 = self._c2f(1024, 3, False, 21, c2f_blocks)(x, train)
        maps = DetectHead(self.num_classes, self.reg_max, dtype=self.dtype, name="model_22")(
            [out3, out4, out5], train)
        if train:
            return maps
        return decode_maps(maps, self.num_classes, self.reg_max, self.strides)


class DetectHead(nn.Module):
    """Decoupled head: per level a box branch (cv2) and a class branch (cv3), each Conv3x3-Conv3x3-Conv1x1.

    (features of P3, P4, P5) -> list of (b, h, w, 4 * reg_max + nc) raw maps.
    """

    num_classes: int
    reg_max: int = 16
    dtype: Any = jnp.float32
    strides = STRIDES

    @nn.compact
    def __call__(self, features, train: bool):
        box_hidden, cls_hidden = head_channels(tuple(f.shape[-1] for f in features), self.num_classes, self.reg_max)
        maps = []
        for level, (x, stride) in enumerate(zip(features, self.strides)):
            box = self._branch(x, train, f"cv2_{level}", box_hidden, 4 * self.reg_max, 1.0)
            cls = self._branch(x, train, f"cv3_{level}", cls_hidden, self.num_classes,
                               class_bias_init(self.num_classes, stride))
            maps.append(jnp.concatenate([box, cls], axis=-1))
        return maps

    def _branch(self, x, train, prefix, hidden, out, bias_value):
        x = ConvBNAct(hidden, 3, dtype=self.dtype, name=f"{prefix}_0")(x, train)
        x = ConvBNAct(hidden, 3, dtype=self.dtype, name=f"{prefix}_1")(x, train)
        return nn.Conv(out, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, kernel_init=torch_conv_init,
                       bias_init=nn.initializers.constant(bias_value), name=f"{prefix}_2")(x)


def init_variables(model: YOLOv8, key, image_hw: tuple[int, int] = (640, 640)):
    """Random variables {"params", "batch_stats"} for `model` (fp32).

    The variables do not depend on the image size (a fully convolutional network), so they are traced on a small
    (1, 64, 64, 3) dummy image; `image_hw` is only checked to be a valid input size (multiples of 32).
    """
    if image_hw[0] % 32 or image_hw[1] % 32:
        raise ValueError(f"init_variables: image size {tuple(image_hw)} must be multiples of 32")
    return model.init(key, jnp.zeros((1, 64, 64, 3), jnp.float32), train=False)


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))

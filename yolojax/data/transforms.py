"""Per-image geometric and photometric transforms in numpy / OpenCV.

Every function here computes: arrays in, arrays out, no files. Randomness enters as an `np.random.Generator`.
Images are `(h, w, 3) uint8` in OpenCV's BGR channel order until `format_record` turns them into RGB (the
reference keeps BGR through its whole augmentation chain, and RandomHSV's numbers depend on that).
Boxes are `(n, 4) float32 xyxy, pixels` of the image they travel with; classes `(n,) int32`.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

PAD_VALUE = 114


def letterbox(image, new_shape, *, auto=False, scaleup=True, stride=32, center=True, pad_value=PAD_VALUE):
    """Resize keeping the aspect ratio, then pad to `new_shape` (the reference's LetterBox).

    The scale is `r = min(H / h, W / w)` (capped at 1 when `scaleup` is False); the resized size is
    `round(w * r), round(h * r)` with bilinear interpolation; the padding is split in two halves when `center`,
    with `round(d - 0.1)` pixels before and `round(d + 0.1)` after, as the reference rounds it. With `auto` the
    padding is reduced modulo `stride` (minimum rectangle), so the output may be smaller than `new_shape`.

    Args:
      image: (h, w, 3) uint8.
      new_shape: (H, W) pixels, or an int for a square.
      auto, scaleup, stride, center: as above.
      pad_value: grey level of the padding.
    Returns:
      image: (H', W', 3) uint8, `(H, W)` unless `auto`.
      ratio: (r, r) the scale applied (width, height).
      pad: (dw, dh) float pixels added before the image on x and y — the offset to apply to boxes scaled by `r`
        (the pixel offset of the image itself is `round(dw - 0.1), round(dh - 0.1)`).
    """
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    h, w = image.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    if center:
        dw, dh = dw / 2, dh / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = (pad_before(dh) if center else 0), int(round(dh + 0.1))
    left, right = (pad_before(dw) if center else 0), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 4)
    return image, (r, r), (float(dw), float(dh))


def pad_before(slack):
    """Pixels of padding before the image on one axis of a centred letterbox with `slack` (float) pixels per side:
    `round(slack - 0.1)`, as the reference rounds it (the image's pixel offset; boxes move by `slack` itself)."""
    return int(round(slack - 0.1))


def resize_long_side(image, imgsz):
    """Resize so the long side equals `imgsz`, keeping the aspect ratio (the reference's load_image).

    Args:
      image: (h0, w0, 3) uint8.
      imgsz: target long side, pixels.
    Returns:
      (h, w, 3) uint8 with `max(h, w) == imgsz`; sizes are `min(ceil(side * r), imgsz)`, bilinear.
    """
    h0, w0 = image.shape[:2]
    r = imgsz / max(h0, w0)
    if r == 1:
        return image
    w, h = min(math.ceil(w0 * r), imgsz), min(math.ceil(h0 * r), imgsz)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def sample_hsv_gains(rng, hgain=0.015, sgain=0.7, vgain=0.4):
    """Random HSV gains (3,) float64: `uniform(-1, 1) * gain + 1` per channel (the reference's RandomHSV)."""
    return rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1


def hsv_tables(gains):
    """(256, 1, 3) uint8 lookup table for H, S, V: hue `(x * g) % 180`, saturation / value `clip(x * g, 0, 255)`."""
    table = np.arange(0, 256, dtype=np.float64)[:, None] * np.asarray(gains, np.float64)  # (256, 3)
    table[:, 0] %= 180
    np.clip(table[:, 1:], 0, 255, out=table[:, 1:])
    return table.astype(np.uint8)[:, None, :]


def apply_hsv(image_bgr, gains, *, to_rgb=False):
    """Scale hue / saturation / value of a BGR image by `gains` (3,) (None: no change).

    Args:
      image_bgr: (h, w, 3) uint8 BGR or (h, w, 4) BGRA (alpha dropped).
      gains: (3,) from `sample_hsv_gains`, or None.
      to_rgb: return RGB instead of BGR (the conversion back from HSV writes either order at the same cost).
    Returns:
      (h, w, 3) uint8, a new array.
    """
    if gains is None:
        if image_bgr.shape[2] == 4:
            return cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2RGB if to_rgb else cv2.COLOR_BGRA2BGR)
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB) if to_rgb else image_bgr.copy()
    hue, sat, val = cv2.split(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV))  # a 4th (alpha) channel is ignored
    table = hsv_tables(gains)
    hsv = cv2.merge([cv2.LUT(ch, np.ascontiguousarray(table[:, 0, k])) for k, ch in enumerate((hue, sat, val))])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB if to_rgb else cv2.COLOR_HSV2BGR)


def flip_boxes(boxes, size, flip_lr, flip_ud):
    """Mirror xyxy boxes (n, 4) in an image of `size` (w, h) pixels: x -> w - x and/or y -> h - y."""
    w, h = size
    boxes = boxes.copy()
    if flip_lr:
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if flip_ud:
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return boxes


def to_bgra(image):
    """(h, w, 3) BGR -> (h, w, 4) BGRA (a no-op on 4 channels): OpenCV's warps run about 2x faster on 4 channels."""
    return image if image.shape[2] == 4 else cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)


def to_bgr(image, out=None):
    """(h, w, 4) BGRA -> (h, w, 3) BGR (a no-op on 3 channels, unless `out` is given).

    `out`: optional (h, w, 3) uint8 array, written in place and returned (e.g. a slot of a batch).
    """
    if out is None:
        return image if image.shape[2] == 3 else cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 3 or not out.flags.c_contiguous:  # OpenCV writes only into contiguous arrays
        out[...] = to_bgr(image)
        return out
    written = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR, dst=out)
    if written.ctypes.data != out.ctypes.data:  # OpenCV allocates anew when `out` does not fit; copy it over
        out[...] = written
    return out


def mixup_images(image1, image2, ratio):
    """`(image1 * ratio + image2 * (1 - ratio))` truncated to uint8, as the reference mixes (ratio ~ Beta(32, 32))."""
    return (image1 * ratio + image2 * (1 - ratio)).astype(np.uint8)


@functools.cache
def unmixed_table():
    """`mixup_table(1.0)`, built once: the table of a sample that MixUp leaves alone (read-only)."""
    table = mixup_table(1.0)
    table.flags.writeable = False
    return table


def mixup_table(ratio):
    """(65536,) uint8: `mixup_images(a, b, ratio)` at index `256 * a + b`, for every pair of uint8 levels (a device
    applies MixUp as a lookup: the same float64 arithmetic, done here once). `ratio` 1 keeps the first image."""
    levels = np.arange(256, dtype=np.uint8)
    first, second = np.broadcast_to(levels[:, None], (256, 256)), np.broadcast_to(levels[None, :], (256, 256))
    return mixup_images(first, second, ratio).reshape(-1)


def blur_like_albumentations(rng, image, p=0.01):
    """The reference's optional Albumentations set, in OpenCV with our generator: Blur, MedianBlur, ToGray, CLAHE,
    each with probability `p` (kernel sizes odd in [3, 7]; CLAHE clip limit in [1, 4], 8x8 tiles, on the L channel).

    Args:
      rng: np.random.Generator.
      image: (h, w, 3) uint8 BGR.
    Returns:
      (h, w, 3) uint8 BGR (the input itself when nothing fired).
    """
    draws = rng.random(4)
    ksizes = rng.choice([3, 5, 7], size=2)
    clip = rng.uniform(1, 4)
    if draws[0] < p:
        image = cv2.blur(image, (int(ksizes[0]),) * 2)
    if draws[1] < p:
        image = cv2.medianBlur(image, int(ksizes[1]))
    if draws[2] < p:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if draws[3] < p:
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(lab[..., 0])
        image = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    return image


def boxes_to_targets(cls, boxes, size, max_boxes):
    """Fixed-size training targets from xyxy pixel boxes.

    Args:
      cls: (n,) int32.
      boxes: (n, 4) xyxy pixels of an image of `size` (w, h).
      max_boxes: rows kept; extra boxes are dropped (the caller warns).
    Returns:
      dict `bboxes` (max_boxes, 4) float32 normalized xywh, `cls` (max_boxes,) int32, `mask` (max_boxes,) bool,
      and `num_dropped` int.
    """
    w, h = size
    n = min(len(cls), max_boxes)
    out_boxes = np.zeros((max_boxes, 4), np.float32)
    out_cls = np.zeros((max_boxes,), np.int32)
    mask = np.zeros((max_boxes,), bool)
    if n:
        b = boxes[:n].astype(np.float32)
        out_boxes[:n] = np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                  (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
        out_cls[:n] = cls[:n]
        mask[:n] = True
    return {"bboxes": out_boxes, "cls": out_cls, "mask": mask, "num_dropped": len(cls) - n}


def xywhn_to_xyxy(bboxes, w, h):
    """Normalized xywh (n, 4) -> xyxy pixels (n, 4) float32 for an image of width w, height h."""
    b = np.asarray(bboxes, np.float32).reshape(-1, 4)
    return np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h,
                     (b[:, 0] + b[:, 2] / 2) * w, (b[:, 1] + b[:, 3] / 2) * h], 1).astype(np.float32)

"""RandomPerspective: a random affine / perspective warp of an image and its boxes (the reference's behaviour).

The matrix is `M = T @ S @ R @ P @ C` (right to left: move the centre to the origin, perspective, rotation+scale,
shear, translation), with the reference's ranges: perspective +-p, rotation +-degrees, scale in [1-scale, 1+scale],
shear +-shear degrees, translation in [0.5-t, 0.5+t] of the output size. An optional horizontal / vertical flip of
the output is folded into the same warp (`flip_matrix`), which saves a full-image copy and gives exactly the pixels
of `np.fliplr` / `np.flipud` applied after the warp.

Boxes: `(n, 4) float32 xyxy pixels`. After the warp, boxes are clipped to the output and filtered with the
reference's `box_candidates` (side > 2 px, area ratio > 0.1 of the scaled original, aspect ratio < 100).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from yolojax.data.transforms import PAD_VALUE


class WarpParams(NamedTuple):
    """One draw of RandomPerspective: `matrix` (3, 3) float32 maps input pixels to output pixels, `scale` the
    isotropic scale factor (for `box_candidates`), `out_size` (w, h) pixels, `is_perspective` whether M[2] != 0."""

    matrix: np.ndarray
    scale: float
    out_size: tuple
    is_perspective: bool


def sample_warp(rng, in_shape, border=(0, 0), *, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                perspective=0.0):
    """Draw a RandomPerspective matrix.

    Args:
      rng: np.random.Generator.
      in_shape: (h, w) of the input image, pixels.
      border: (x, y) pixels added on each side of the output (negative for a mosaic canvas, see mosaic_border).
      degrees, translate, scale, shear, perspective: the reference's hyper-parameters (default.yaml names).
    Returns:
      WarpParams with `out_size = (w + 2 * border_x, h + 2 * border_y)`.
    """
    h, w = in_shape
    out_w, out_h = w + 2 * border[1], h + 2 * border[0]  # the reference pairs them this way; borders are equal
    centre = np.eye(3, dtype=np.float32)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    persp = np.eye(3, dtype=np.float32)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective, size=2)
    rot = np.eye(3, dtype=np.float32)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=s)
    shr = np.eye(3, dtype=np.float32)
    shr[0, 1], shr[1, 0] = np.tan(rng.uniform(-shear, shear, size=2) * math.pi / 180)
    trans = np.eye(3, dtype=np.float32)
    trans[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    trans[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    matrix = trans @ shr @ rot @ persp @ centre
    return WarpParams(matrix.astype(np.float32), float(s), (int(out_w), int(out_h)), bool(perspective))


def flip_matrix(out_size, flip_lr: bool, flip_ud: bool):
    """(3, 3) float32 pixel-index mirror of an (w, h) image: x -> w - 1 - x and/or y -> h - 1 - y."""
    w, h = out_size
    f = np.eye(3, dtype=np.float32)
    if flip_lr:
        f[0, 0], f[0, 2] = -1, w - 1
    if flip_ud:
        f[1, 1], f[1, 2] = -1, h - 1
    return f


def composed_matrix(matrix, origin=(0, 0), pixel_flip=None):
    """The (3, 3) float32 matrix that `warp_image` hands to OpenCV: `matrix` for an input whose top-left pixel sits at
    `origin` (x0, y0) of the frame `matrix` expects, then `pixel_flip` (3, 3) if given."""
    m = matrix
    if tuple(origin) != (0, 0):
        shift = np.eye(3, dtype=np.float64)
        shift[0, 2], shift[1, 2] = origin
        m = (m.astype(np.float64) @ shift).astype(np.float32)
    return m if pixel_flip is None else pixel_flip @ m


def warp_image(image, matrix, out_size, is_perspective, *, pixel_flip=None, origin=(0, 0)):
    """Warp `image` (h, w, c) uint8 with `matrix` (3, 3) into `out_size` (w, h), bilinear, border 114.

    `pixel_flip` (3, 3), if given, is applied after `matrix` (a flip folded into the warp). `origin` (x0, y0): where
    `image`'s top-left pixel sits in the frame `matrix` expects (`image` is a window of a larger input, see
    `source_window`).
    """
    m = composed_matrix(matrix, origin, pixel_flip)
    if is_perspective:
        return cv2.warpPerspective(image, m, dsize=out_size, borderValue=(PAD_VALUE,) * 3)
    return cv2.warpAffine(image, m[:2], dsize=out_size, borderValue=(PAD_VALUE,) * 3)


def source_window(params: WarpParams, in_shape, margin=2):
    """The part of the input that the warp reads: (x0, y0, x1, y1) input pixels, clipped to `in_shape` (h, w).

    The bounding box of the inverse-mapped output corners (a projective map sends the output rectangle's edges to
    straight lines), widened by `margin` pixels for the bilinear neighbours.
    """
    w, h = params.out_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64)
    src = corners @ np.linalg.inv(params.matrix.astype(np.float64)).T
    xy = src[:, :2] / src[:, 2:3]
    x0, y0 = np.floor(xy.min(0)).astype(int) - margin
    x1, y1 = np.ceil(xy.max(0)).astype(int) + margin + 1
    ih, iw = in_shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, iw), min(y1, ih)
    return (int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1)))


def transform_boxes(boxes, matrix, is_perspective):
    """Map xyxy boxes (n, 4) through `matrix` (3, 3): the box around the 4 transformed corners, (n, 4) float32."""
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    corners = np.ones((n * 4, 3), np.float32)
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = corners @ matrix.T
    xy = (xy[:, :2] / xy[:, 2:3] if is_perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1).astype(np.float32)


def box_candidates(box1, box2, wh_thr=2.0, ar_thr=100.0, area_thr=0.1, eps=1e-16):
    """Keep mask (n,) for boxes that survived augmentation (the reference's formula).

    Args:
      box1: (n, 4) xyxy before augmentation, scaled by the warp's scale factor.
      box2: (n, 4) xyxy after augmentation (clipped).
    Returns:
      (n,) bool: both sides > wh_thr px, area2 / area1 > area_thr, aspect ratio max(w/h, h/w) < ar_thr.
    """
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def warp_labels(cls, boxes, params: WarpParams):
    """Transform, clip and filter boxes for a warp.

    Args:
      cls: (n,) int32.
      boxes: (n, 4) float32 xyxy input pixels.
      params: the warp.
    Returns:
      (cls (k,), boxes (k, 4) xyxy output pixels, keep (n,) bool).
    """
    new = transform_boxes(boxes, params.matrix, params.is_perspective)
    w, h = params.out_size
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, w)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, h)
    keep = box_candidates(boxes * params.scale, new)
    return cls[keep], new[keep], keep


def is_identity(params: WarpParams, in_shape) -> bool:
    """True when the warp leaves the image unchanged (the reference then skips cv2)."""
    return tuple(params.out_size) == (in_shape[1], in_shape[0]) and bool((params.matrix == np.eye(3)).all())

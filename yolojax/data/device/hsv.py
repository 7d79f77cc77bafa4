"""RandomHSV's colour-space round trip in jnp, bit-exact with OpenCV's uint8 `cvtColor`, to run in the train step.

The CPU pipeline (option `hsv_on_device`) then only draws the gains and builds the (256, 3) lookup table of each
image (`transforms.hsv_tables`); `apply_hsv_luts` does BGR -> HSV -> LUT -> RGB on the accelerator and gives the
same pixels as `transforms.apply_hsv(image, gains, to_rgb=True)`.

How OpenCV computes (read from its behaviour and confirmed exhaustively over all 2^24 inputs in
tests/data/test_device_hsv.py):
- BGR2HSV (uint8, hue range 180) is integer fixed point with 12 fraction bits: `v = max(b, g, r)`,
  `d = v - min(b, g, r)`, `s = (d * S[v] + 2^11) >> 12` with `S[v] = round(255 * 2^12 / v)`, and the hue numerator
  (`g - b` if v is r, else `b - r + 2d` if v is g, else `r - g + 4d`) scaled by `H[d] = round(180 * 2^12 / (6d))`
  the same way; a negative hue gets +180.
- HSV2RGB (uint8) goes through float32: `s, v = S / 255, V / 255` (as multiplications by float32(1/255)),
  `x = H * float32(1/30)`, `sector = trunc(x) mod 6`, `f = x - trunc(x)`; the channel values are `v`, `v(1 - s)`,
  `v(1 - s f)` and `v(1 - s(1 - f))`, where `1 - s f` and `1 - s(1 - f)` are fused multiply-adds (one rounding);
  each is multiplied by 255 and truncated. This is OpenCV's vectorised loop, which covers every pixel of rows
  whose width is a multiple of its block (32 pixels with AVX2; the train images are multiples of 32). The few
  pixels at the end of other rows go through a scalar loop that rounds instead of truncating (off by one level).

Everything that depends on (S, H) only is tabulated on the host, so the device computes products only: no
addition that a compiler could fuse into an FMA, hence the same bits on CPU, GPU and TPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

HSV_SHIFT = 12  # fraction bits of OpenCV's fixed-point BGR2HSV
HUE_RANGE = 180
INV_255 = np.float32(1.0 / 255.0)
# For each hue sector: which of the four values (v, v(1-s), v(1-sf), v(1-s(1-f))) is (r, g, b).
SECTOR_RGB = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


@functools.cache
def fixed_point_reciprocals():
    """(S, H): (256,) int32 each. `S[v] = round(255 * 2^12 / v)`, `H[d] = round(180 * 2^12 / (6 d))`, 0 at 0."""
    i = np.arange(1, 256, dtype=np.float64)
    sat = np.zeros(256, np.int32)
    hue = np.zeros(256, np.int32)
    sat[1:] = np.rint((255 << HSV_SHIFT) / i)
    hue[1:] = np.rint((HUE_RANGE << HSV_SHIFT) / (6 * i))
    return sat, hue


@functools.cache
def rgb_factors():
    """(256 * 256, 3) float32: row `S * 256 + H` holds the factor by which `V / 255` is multiplied for R, G, B.

    Rounded exactly as OpenCV's float32 pipeline: the FMA `1 - s * f` is `float32(1 - s * f)` with the product
    exact in float64 (24 + 24 bits); the exhaustive test shows the float64 sum's rounding changes no output.
    """
    f32 = np.float32
    hue = np.arange(256, dtype=f32) * (f32(6.0) / f32(HUE_RANGE))
    whole = np.trunc(hue)
    frac = (hue - whole).astype(np.float64)
    sector = (whole - np.trunc(whole * f32(1.0 / 6.0)) * f32(6.0)).astype(np.int64)
    s = (np.arange(256, dtype=f32) * INV_255).astype(np.float64)[:, None]  # (256 s, 1)
    one_minus_f = (1.0 - frac).astype(f32).astype(np.float64)
    values = np.stack(np.broadcast_arrays(
        np.ones((256, 256)), (1.0 - s).astype(f32), (1.0 - s * frac).astype(f32), (1.0 - s * one_minus_f).astype(f32),
    ), -1).astype(f32)  # (256 s, 256 h, 4)
    picks = SECTOR_RGB[sector]  # (256 h, 3)
    return np.take_along_axis(values, np.broadcast_to(picks, (256, 256, 3)), -1).reshape(256 * 256, 3)


def bgr_to_hsv_u8(img):
    """OpenCV's uint8 COLOR_BGR2HSV, exactly.

    Args:
      img: (..., 3) uint8 BGR.
    Returns:
      (..., 3) uint8 HSV: hue in [0, 180), saturation and value in [0, 255].
    """
    sat_recip, hue_recip = (jnp.asarray(t) for t in fixed_point_reciprocals())
    x = img.astype(jnp.int32)
    b, g, r = x[..., 0], x[..., 1], x[..., 2]
    v = jnp.maximum(jnp.maximum(b, g), r)
    d = v - jnp.minimum(jnp.minimum(b, g), r)
    half = 1 << (HSV_SHIFT - 1)
    s = (d * jnp.take(sat_recip, v, mode="clip") + half) >> HSV_SHIFT
    num = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * d, r - g + 4 * d))
    h = (num * jnp.take(hue_recip, d, mode="clip") + half) >> HSV_SHIFT  # arithmetic shift: floor
    h = jnp.where(h < 0, h + HUE_RANGE, h)
    return jnp.stack([h, s, v], -1).astype(jnp.uint8)


def hsv_to_rgb_u8(hsv):
    """OpenCV's uint8 COLOR_HSV2RGB (its vectorised loop: see the module docstring), exactly.

    Args:
      hsv: (..., 3) uint8 HSV, hue range 180 (values 180..255 wrap as OpenCV wraps them).
    Returns:
      (..., 3) uint8 RGB.
    """
    x = hsv.astype(jnp.int32)
    factors = jnp.take(jnp.asarray(rgb_factors()), x[..., 1] * 256 + x[..., 0], axis=0, mode="clip")  # (..., 3)
    v = x[..., 2:].astype(jnp.float32) * INV_255
    return jnp.clip(jnp.trunc((v * factors) * np.float32(255.0)), 0, 255).astype(jnp.uint8)


def lookup(hsv, lut):
    """Per-channel table lookup (cv2.LUT on each of h, s, v).

    Args:
      hsv: (h, w, 3) uint8. lut: (256, 3) uint8, column k the table of channel k.
    Returns:
      (h, w, 3) uint8 with `out[..., k] = lut[hsv[..., k], k]`.
    """
    flat = lut.reshape(-1)  # row-major: entry (value, k) at value * 3 + k
    return jnp.take(flat, hsv.astype(jnp.int32) * 3 + jnp.arange(3), mode="clip")


def apply_hsv_luts(images_bgr, luts):
    """RandomHSV on device: BGR -> HSV, each image's hue/sat/val tables, HSV -> RGB (`transforms.apply_hsv`).

    Args:
      images_bgr: (b, h, w, 3) uint8 BGR.
      luts: (b, 256, 3) uint8, one `transforms.hsv_tables(gains)[:, 0, :]` per image.
    Returns:
      (b, h, w, 3) uint8 RGB.
    """
    return hsv_to_rgb_u8(jax.vmap(lookup)(bgr_to_hsv_u8(images_bgr), luts))

"""Mosaic + RandomPerspective pixels on the accelerator, bit-exact with the CPU path's OpenCV `warpAffine`.

The CPU pipeline keeps the labels (layout, warp matrix, boxes); the train step renders the pixels: for every output
pixel the source point on the (2s, 2s) mosaic canvas (or the (s, s) letterbox canvas) is computed as OpenCV computes
it for the window image the CPU path warps (`perspective.source_window`), and the 4 bilinear neighbours are read
straight from the tiles (`mosaic.Placement` geometry; uncovered canvas points are 114). The output equals
`warp_image(render_canvas(images, placements, size, window), matrix, out_size, False, pixel_flip=..,
origin=window[:2])` (BGR(A) in, its first 3 channels out). Affine warps only (no `warpPerspective`).

What OpenCV 5.0.0 computes (its new SIMD kernel `warpAffineLinearInvoker_8UC3/4`, not the classic fixed-point
`INTER_BITS` remap; confirmed by a numpy model against cv2 with 0 differing values over ~70M, 3 and 4 channels):
- `M` (the forward matrix, composed as `warp_image` composes it) is inverted in double (`invertAffineTransform`)
  and cast to float32: `m0..m5`.
- Per output row y: `X_y = f32(f32(y * m1) + m2)`, `Y_y = f32(f32(y * m4) + m5)` (two roundings, no FMA).
- Per pixel: `sx = fma(m0, x, X_y)`, `sy = fma(m3, x, Y_y)` (float32 FMA, one rounding); `ix = floor(sx)`,
  `alpha = sx - ix`, same for y / beta.
- Per channel: `v0 = fma(alpha, p01 - p00, p00)`, `v1 = fma(alpha, p11 - p10, p10)`,
  `r = fma(beta, v1 - v0, v0)`, output `saturate(round_half_even(r))`; neighbours outside the image are 114.
This is the vectorised loop of OpenCV's FMA builds (AVX2 or AVX-512 dispatch: any x86 server since 2013;
checked with both). It covers whole rows when the output width is a multiple of its block (16 / 32 pixels; train
sizes are multiples of 32); other widths end each row with a scalar loop that rounds differently. Without FMA
(SSE-only dispatch) OpenCV rounds each product (measured: 1e-4 of the values 1 level off): the CPU path itself then
differs from this.

How the device reproduces it: FMAs are not portable (XLA may or may not fuse `a * b + c`), so nothing here relies on
one. Every product is made exact (the host tabulates `m0 * x` as the float pair `hi + lo`:
yolojax.data.device.tables; `alpha` is split in a 16-bit and an 8-bit part before multiplying by a pixel
difference), and a correctly rounded `RN(a + b + c)` is built from float additions only (TwoSum and a round-to-odd
step, Boldo & Melquiond 2008). The last rounding, `round(RN(beta * d + v0))`, only has to know on which side of a
half-integer (and of its rounding band) the exact value lies: that residual is computed in int32 fixed point (2^-45
units, modulo 2^32). Hence the same bits on CPU, GPU and TPU: 0 differing values over 48M (mosaics and letterboxes
at 320 / 640, rotation up to 45 degrees, shear, flips; noise, blurred and flat images). One theoretical gap: a `v0`
below 2^-22 (a 0-valued pixel next to a source point within 2^-22 px after the window's left edge) is truncated to
2^-45 in that residual, which matters only if the exact value is within 2^-45 of a rounding boundary (far below 1e-9
per image).
Limits: canvas coordinates must fit int32, and `n * S * S < 2^31` for the tile gather.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from yolojax.data.transforms import PAD_VALUE

PAD_PACKED = PAD_VALUE * 0x010101  # a 114-grey pixel as packed by `pack_tiles`
RESIDUAL_BITS = 45  # fixed-point fraction bits of the final rounding's residual (see `_round_lerp`)


def _as_f32(i):
    return lax.bitcast_convert_type(i, jnp.float32)


def _as_i32(f):
    return lax.bitcast_convert_type(f, jnp.int32)


def _two_sum(a, b):
    """(s, e) with s = RN(a + b) and s + e = a + b exactly (Knuth's TwoSum: additions only)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_round_to_odd(a, b):
    """a + b rounded to odd: RN(a + b), moved one step towards the exact sum when inexact and even."""
    s, e = _two_sum(a, b)
    bits = _as_i32(s)
    step = jnp.where((e > 0) == (s > 0), 1, -1)  # +1 on the bits grows |s|
    return _as_f32(jnp.where((e != 0) & ((bits & 1) == 0), bits + step, bits))


def _sum3(a, b, c):
    """RN(a + b + c), float32, correctly rounded (Boldo & Melquiond's algorithm with rounding to odd)."""
    uh, ul = _two_sum(b, c)
    th, tl = _two_sum(a, uh)
    return th + _add_round_to_odd(tl, ul)


def _fma_pixel(a, d, p):
    """float32 fma(a, d, p) for a in [0, 1] and integer-valued d in [-255, 255]: a is split into a 16-bit and an
    8-bit part so both products with d are exact."""
    a_hi = _as_f32(_as_i32(a) & ~0xFF)
    return _sum3(p, a_hi * d, (a - a_hi) * d)


def _unpack(f):
    """(mantissa, exponent) int32 with |f| = mantissa * 2^exponent (mantissa < 2^24; zero and denormals too)."""
    bits = _as_i32(f)
    field = (bits >> 23) & 0xFF
    return (bits & 0x7FFFFF) | jnp.where(field > 0, 0x800000, 0), jnp.maximum(field, 1) - 150


def _scaled_floor(b, d):
    """(floor(b * d * 2^45) mod 2^32, inexact) for b in [0, 1], |d| <= 255 floats: the 48-bit mantissa product in
    two 24-bit limbs, shifted with the bits shifted out kept as a sticky flag."""
    mb, eb = _unpack(b)
    md, ed = _unpack(d)
    s = eb + ed + RESIDUAL_BITS  # <= 5 for these ranges
    b1, b0, d1, d0 = mb >> 12, mb & 0xFFF, md >> 12, md & 0xFFF
    mid = b1 * d0 + b0 * d1
    low = ((mid & 0xFFF) << 12) + b0 * d0
    hi, lo = b1 * d1 + (mid >> 12) + (low >> 24), low & 0xFFFFFF  # product = hi * 2^24 + lo
    left = jnp.clip(s, 0, 7)
    r = jnp.clip(-s, 1, 23)
    r2 = jnp.clip(-s - 24, 0, 30)
    near = -s < 24
    value = jnp.where(s >= 0, (hi << (24 + left)) + (lo << left),
                      jnp.where(near, (hi << (24 - r)) + (lo >> r), hi >> r2))
    sticky = jnp.where(near, (lo & ((1 << r) - 1)) != 0, (lo != 0) | ((hi & ((1 << r2) - 1)) != 0)) & (s < 0)
    value = jnp.where(d < 0, -value - sticky.astype(jnp.int32), value)
    return value, sticky


def _round_lerp(v0, beta, d):
    """saturate(round_half_even(float32 fma(beta, d, v0))) -> int32 in [0, 255], exactly.

    Approximate e ~ v0 + beta * d in float (error <= 2^-16), t = floor(e) + 0.5. Far from t the approximation
    decides. Near t, OpenCV's float result rounds to t (then to the even integer) iff the exact value is within half
    an ulp of t: the residual (v0 + beta * d - t) * 2^45 is computed exactly modulo 2^32 (t * 2^45 = 0 mod 2^32).
    """
    approx = v0 + beta * d
    m = jnp.floor(approx)
    t = m + 0.5
    mv, ev = _unpack(v0)
    shift = ev + RESIDUAL_BITS
    v_fixed = jnp.where(shift >= 0, mv << jnp.clip(shift, 0, 31), mv >> jnp.clip(-shift, 0, 31))
    p_floor, sticky = _scaled_floor(beta, d)
    z = v_fixed + p_floor  # floor((exact - t) * 2^45), valid while |exact - t| < 2^-14
    half_ulp = 1 << (((_as_i32(jnp.abs(t)) >> 23) & 0xFF) - 127 + RESIDUAL_BITS - 24)
    below_ulp = jnp.where(t == 0.5, half_ulp >> 1, half_ulp)  # 0.5 is a power of two: finer grid below it
    m = m.astype(jnp.int32)
    even = m + (m & 1)
    tie_zone = jnp.where((z > half_ulp) | ((z == half_ulp) & sticky), m + 1, jnp.where(z < -below_ulp, m, even))
    out = jnp.where(jnp.abs(approx - t) <= 2.0 ** -15, tie_zone, m + (approx > t))
    return jnp.clip(out, 0, 255)


def _source_points(tables, h, w):
    """Canvas pixel (ix, iy) int32 and fractions (alpha, beta) float32 of every output pixel: (b, h, w) each."""
    def coord(axis):
        row = _as_f32(tables[f"row_{axis}"])[:, :h, None]
        hi = _as_f32(tables[f"col_{axis}_hi"])[:, None, :w]
        lo = _as_f32(tables[f"col_{axis}_lo"])[:, None, :w]
        s = _sum3(row, hi, lo)
        whole = jnp.floor(s)
        origin = tables["origin"][:, 0 if axis == "x" else 1, None, None]
        return whole.astype(jnp.int32) + origin, s - whole

    (ix, alpha), (iy, beta) = coord("x"), coord("y")
    return ix, iy, alpha, beta


def pack_tiles(tiles):
    """(n, S, S, 3) uint8 -> (n * S * S,) int32 with channel c in bits 8c..8c+7 (one gather per pixel)."""
    t = tiles.astype(jnp.int32)
    return (t[..., 0] | (t[..., 1] << 8) | (t[..., 2] << 16)).reshape(-1)


def _fetch(packed, size, slots, placements, u, v):
    """Packed canvas pixels at (u, v) (b, h, w) canvas pixels: the last tile whose rectangle covers the point
    (tiles are painted in order), else 114. Indices are clamped, so the gather never leaves the tile array and
    uncovered points or unused slots (-1) are never read."""
    index = jnp.full(u.shape, -1, jnp.int32)
    for k in range(slots.shape[1]):
        x1, y1, x2, y2, ox, oy = (placements[:, k, j, None, None] for j in range(6))
        slot = slots[:, k, None, None]
        inside = (slot >= 0) & (u >= x1) & (u < x2) & (v >= y1) & (v < y2)
        index = jnp.where(inside, (slot * size + (v - oy)) * size + (u - ox), index)
    pixel = jnp.take(packed, index, mode="clip")  # index -1 reads element 0, then is masked
    return jnp.where(index >= 0, pixel, PAD_PACKED)


def render_warped(tiles, slots, placements, tables):
    """Render warped mosaic / letterbox images from their tiles.

    Args:
      tiles: (n, S, S, 3) uint8 BGR, image k at tiles[k, :h_k, :w_k] (the rest is never read). n * S * S < 2^31.
      slots: (b, K) int32, the tile of each canvas tile of output image i (-1: unused).
      placements: (b, K, 6) int32 [x1, y1, x2, y2, ox, oy] canvas pixels (`mosaic.Placement` fields): tile pixel
        (ty, tx) is canvas (oy + ty, ox + tx), visible inside [x1, x2) x [y1, y2); later tiles paint over earlier.
      tables: dict of `tables.affine_tables` stacked over the batch: (b, H) row_*, (b, W) col_*, (b, 2) origin.
    Returns:
      (b, H, W, 3) uint8 BGR, the CPU path's warped pixels (see the module docstring).
    """
    size = tiles.shape[1]
    h, w = tables["row_x"].shape[1], tables["col_x_hi"].shape[1]
    packed = pack_tiles(tiles)
    ix, iy, alpha, beta = _source_points(tables, h, w)
    corners = [_fetch(packed, size, slots, placements, ix + dx, iy + dy) for dy in (0, 1) for dx in (0, 1)]
    channels = []
    for c in range(3):
        p00, p01, p10, p11 = (((q >> (8 * c)) & 0xFF).astype(jnp.float32) for q in corners)
        v0 = _fma_pixel(alpha, p01 - p00, p00)
        v1 = _fma_pixel(alpha, p11 - p10, p10)
        channels.append(_round_lerp(v0, beta, v1 - v0))
    return jnp.stack(channels, -1).astype(jnp.uint8)

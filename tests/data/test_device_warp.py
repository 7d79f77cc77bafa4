"""Mosaic + RandomPerspective pixels on device: OpenCV 5's float32 warpAffine reproduced bit for bit, the rendered
images equal to the CPU path's (`render_canvas` on the source window, then `warp_image`)."""
from fractions import Fraction

import cv2
import jax
import numpy as np
import pytest

from yolojax.data import mosaic as M
from yolojax.data import perspective as P
from yolojax.data import transforms as T
from yolojax.data.device import warp as W
from yolojax.data.device.tables import (
    TABLE_KEYS,
    affine_tables,
    invert_affine,
    tile_rows,
)

S = 96  # imgsz: a multiple of 32, so every output row goes through OpenCV's vectorised loop
render = jax.jit(W.render_warped)


def random_image(rng, h, w):
    """BGRA (the CPU path warps 4 channels): noise, blurred noise or flat blocks (many equal neighbours)."""
    image = rng.integers(0, 256, (h, w, 4), np.uint8)
    kind = rng.integers(3)
    if kind == 1:
        image = cv2.GaussianBlur(image, (9, 9), 3)
    if kind == 2:
        image = cv2.resize(image[::8, ::8] // 64 * 64, (w, h), interpolation=cv2.INTER_NEAREST)
    return image


def random_shape(rng, s):
    short = int(rng.integers(s // 3, s + 1))
    return (s, short) if rng.random() < 0.5 else (short, s)


def mosaic_case(rng, s, flips, **warp):
    """A 4-mosaic through the CPU path: (tile images, placements, tables, expected BGR output)."""
    shapes = [random_shape(rng, s) for _ in range(4)]
    images = [random_image(rng, h, w) for h, w in shapes]
    placements = M.layout4(shapes, s, M.sample_mosaic_center(rng, s))
    params = P.sample_warp(rng, (2 * s, 2 * s), M.mosaic_border(s), **warp)
    window = P.source_window(params, (2 * s, 2 * s))
    flip = P.flip_matrix(params.out_size, *flips)
    canvas = M.render_canvas(images, placements, 2 * s, window)
    want = P.warp_image(canvas, params.matrix, params.out_size, False, pixel_flip=flip, origin=window[:2])
    tables = affine_tables(params.matrix, params.out_size, window[:2], flip)
    return images, placements, tables, want[..., :3]


def letterbox_case(rng, s, flips, **warp):
    """A non-mosaic sample: letterboxed to (s, s) (border (0, 0)), then warped."""
    image = random_image(rng, *random_shape(rng, s))
    boxed, _, (dw, dh) = T.letterbox(image, (s, s))
    left, top = round(dw - 0.1), round(dh - 0.1)
    params = P.sample_warp(rng, (s, s), (0, 0), **warp)
    flip = P.flip_matrix(params.out_size, *flips)
    want = P.warp_image(boxed, params.matrix, params.out_size, False, pixel_flip=flip)
    tables = affine_tables(params.matrix, params.out_size, (0, 0), flip)
    placement = M.Placement(left, top, left + image.shape[1], top + image.shape[0], 0, 0, left, top)
    return [image], [placement], tables, want[..., :3]


def device_batch(cases, s, junk=0):
    """(tiles, slots, placements, tables) of the cases, their tiles in one array; `junk` fills unused bytes."""
    images = [im for case in cases for im in case[0]]
    tiles = np.full((len(images), s, s, 3), junk, np.uint8)
    for k, im in enumerate(images):
        tiles[k, :im.shape[0], :im.shape[1]] = im[..., :3]
    rows, first = [], 0
    for case in cases:
        rows.append(tile_rows(list(range(first, first + len(case[1]))), case[1]))
        first += len(case[1])
    tables = {k: np.stack([case[2][k] for case in cases]) for k in TABLE_KEYS}
    return tiles, np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), tables


def assert_renders_like_cpu(cases, s=S):
    got = np.asarray(render(*device_batch(cases, s)))
    np.testing.assert_array_equal(got, np.stack([case[3] for case in cases]))


FLIPS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mosaic_with_reference_default_warp_equals_cpu(seed):
    rng = np.random.default_rng(seed)
    assert_renders_like_cpu([mosaic_case(rng, S, f) for f in FLIPS])


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_mosaic_with_rotation_and_shear_equals_cpu(seed):
    rng = np.random.default_rng(seed)
    assert_renders_like_cpu([mosaic_case(rng, S, f, degrees=10.0, shear=5.0) for f in FLIPS])


@pytest.mark.parametrize("seed", [6, 7])
def test_letterbox_warp_equals_cpu(seed):
    """The image's edges are the window's edges here: source points in (-1, 1) px read the 114 border."""
    rng = np.random.default_rng(seed)
    assert_renders_like_cpu([letterbox_case(rng, S, f, degrees=10.0 * (k % 2), shear=5.0 * (k % 2))
                             for k, f in enumerate(FLIPS)])


def test_identity_warp_copies_the_letterboxed_image():
    rng = np.random.default_rng(8)
    image = random_image(rng, 60, S)
    tables = affine_tables(np.eye(3, dtype=np.float32), (S, S))
    boxed = T.letterbox(image, (S, S))[0][..., :3]
    case = ([image], [M.Placement(0, 18, S, 78, 0, 0, 0, 18)], tables, boxed)
    assert_renders_like_cpu([case])


def test_mosaic_and_letterbox_in_one_batch_read_their_own_tiles():
    rng = np.random.default_rng(9)
    assert_renders_like_cpu([letterbox_case(rng, S, FLIPS[1]), mosaic_case(rng, S, FLIPS[0], degrees=10.0),
                             letterbox_case(rng, S, FLIPS[0])])


def test_unused_slots_and_tile_padding_are_never_read():
    rng = np.random.default_rng(10)
    case = letterbox_case(rng, S, FLIPS[0], degrees=10.0)
    tiles, slots, placements, tables = device_batch([case], S, junk=255)
    tiles = np.concatenate([tiles, np.full_like(tiles, 255)])  # slot 1 exists but is never referenced
    assert slots.tolist() == [[0, -1, -1, -1]]
    placements[0, 1:] = [0, 0, 2 * S, 2 * S, 0, 0]  # even a covering rectangle is ignored for slot -1
    np.testing.assert_array_equal(np.asarray(render(tiles, slots, placements, tables))[0], case[3])


def test_jit_traces_once_for_fixed_shapes():
    traces = []

    def counted(*args):
        traces.append(1)
        return W.render_warped(*args)

    fn = jax.jit(counted)
    for seed in (11, 12, 13):
        rng = np.random.default_rng(seed)
        fn(*device_batch([mosaic_case(rng, S, FLIPS[seed % 4], degrees=10.0)], S)).block_until_ready()
    assert len(traces) == 1


def test_letterbox_tile_rows_pad_to_k_tiles():
    from yolojax.data.augment import letterbox_layout

    placement, _ = letterbox_layout((40, 64), 64)  # (h, w): 12 rows of padding above, round(12 - 0.1)
    slots, rows = tile_rows([5], [placement], k=4)
    assert slots.tolist() == [5, -1, -1, -1]
    assert rows.tolist() == [[0, 12, 64, 52, 0, 12]] + [[0, 0, 0, 0, 0, 0]] * 3


def test_perspective_matrices_are_rejected():
    matrix = np.eye(3, dtype=np.float32)
    matrix[2, 0] = 1e-4
    with pytest.raises(ValueError, match="affine"):
        affine_tables(matrix, (S, S))


# -- what OpenCV 5 computes, and the exact float pieces that reproduce it --------------------------------------
def fma32(a, b, c):
    """float32 fma through float64 (exact for these operands' bit spans)."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def opencv_warp_model(image, matrix, size):
    """The module docstring's formula in numpy (border 114)."""
    m = invert_affine(matrix)
    ys, xs = np.arange(size[1], dtype=np.float32)[:, None], np.arange(size[0], dtype=np.float32)
    sx, sy = fma32(m[0], xs, ys * m[1] + m[2]), fma32(m[3], xs, ys * m[4] + m[5])
    ix, iy = np.floor(sx), np.floor(sy)
    alpha, beta = (sx - ix)[..., None], (sy - iy)[..., None]
    h, w = image.shape[:2]

    def pixel(dx, dy):
        u, v = ix.astype(int) + dx, iy.astype(int) + dy
        inside = ((u >= 0) & (u < w) & (v >= 0) & (v < h))[..., None]
        return np.where(inside, image[v.clip(0, h - 1), u.clip(0, w - 1)], 114).astype(np.float32)

    v0 = fma32(alpha, pixel(1, 0) - pixel(0, 0), pixel(0, 0))
    v1 = fma32(alpha, pixel(1, 1) - pixel(0, 1), pixel(0, 1))
    return np.rint(fma32(beta, v1 - v0, v0)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [3, 4])
def test_opencv_warp_affine_is_the_float32_fma_formula(channels):
    rng = np.random.default_rng(14)
    for _ in range(4):
        image = rng.integers(0, 256, (150, 170, channels), np.uint8)
        angle, scale = rng.uniform(-30, 30), rng.uniform(0.5, 1.5)
        matrix = np.eye(3, dtype=np.float32)
        matrix[:2] = cv2.getRotationMatrix2D((80.0, 70.0), angle, scale)
        matrix[:2, 2] += rng.uniform(-20, 20, 2)
        want = cv2.warpAffine(image, matrix[:2], (128, 128), borderValue=(114,) * channels)
        np.testing.assert_array_equal(opencv_warp_model(image, matrix, (128, 128)), want)


def exact_round32(value: Fraction):
    """Round a rational to the nearest float32, ties to even."""
    r = np.float32(float(value))
    around = [np.nextafter(r, np.float32(-np.inf)), r, np.nextafter(r, np.float32(np.inf))]
    return min(around, key=lambda q: (abs(Fraction(float(q)) - value), int(np.array(q).view(np.int32)) & 1))


def test_fma_pixel_is_correctly_rounded():
    rng = np.random.default_rng(15)
    a = (rng.uniform(0, 1, 2000) * 2.0 ** -rng.integers(0, 20, 2000)).astype(np.float32)
    p, q = (rng.integers(0, 256, 2000).astype(np.float32) for _ in range(2))
    got = np.asarray(jax.jit(W._fma_pixel)(a, q - p, p))
    want = [exact_round32(Fraction(float(x)) * Fraction(float(d)) + Fraction(float(y))) for x, d, y in zip(a, q - p, p)]
    np.testing.assert_array_equal(got, np.array(want, np.float32))


def test_round_lerp_rounds_like_opencv_next_to_half_integers():
    """v0 + beta * d placed within a few ulps of k + 0.5: the float32 fma result, then round half to even."""
    rng = np.random.default_rng(16)
    n = 3000
    beta = rng.uniform(0, 1, n).astype(np.float32)
    beta[: n // 2] = np.round(beta[: n // 2] * 2 ** 23) / 2 ** 23  # the usual 2^-23 grid
    d = (rng.uniform(-255, 255, n) * rng.choice([1, 1e-3, 1e-6], n)).astype(np.float32)
    half = rng.integers(0, 255, n) + 0.5
    v0 = (half - beta.astype(np.float64) * d).astype(np.float32)
    v0 = np.clip(v0 + rng.integers(-3, 4, n) * np.spacing(v0), 0, 255).astype(np.float32)
    got = np.asarray(jax.jit(W._round_lerp)(v0, beta, d))
    fused = [exact_round32(Fraction(float(v)) + Fraction(float(b)) * Fraction(float(x)))
             for v, b, x in zip(v0, beta, d)]
    want = np.rint(np.array(fused, np.float32)).clip(0, 255)
    np.testing.assert_array_equal(got, want)
    assert (np.array(fused, np.float64) % 1 == 0.5).sum() > n // 10  # many land exactly on k + 0.5

"""yolojax.data transforms / mosaic / perspective: hand computations and parity with ultralytics 8.2.103."""

import numpy as np
import pytest

from yolojax.data import mosaic as M
from yolojax.data import perspective as P
from yolojax.data import transforms as T


class FractionRng:
    """Stands in for np.random.Generator: `uniform(lo, hi, size)` returns lo + f * (hi - lo) for the next
    fractions f of a list, so that our sampler and the reference (patched the same way) draw equal values."""

    def __init__(self, fractions):
        self.fractions = list(fractions)

    def next_fraction(self):
        return self.fractions.pop(0)

    def uniform(self, lo=0.0, hi=1.0, size=None):
        if size is None:
            return lo + self.next_fraction() * (hi - lo)
        return np.array([lo + self.next_fraction() * (hi - lo) for _ in range(size)])


def reference_uniform(fractions):
    rng = FractionRng(fractions)
    return lambda lo, hi: rng.uniform(lo, hi)


def random_image(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def reference_instances(boxes_xyxy):
    from ultralytics.utils.instance import Instances

    boxes = boxes_xyxy.astype(np.float32).copy()
    return Instances(boxes, segments=np.zeros((0, 1000, 2), np.float32), bbox_format="xyxy", normalized=False)


@pytest.mark.parity
@pytest.mark.parametrize("shape,new_shape,kwargs", [
    ((480, 640), (640, 640), {}), ((333, 517), (640, 640), {}), ((517, 333), (320, 256), {}),
    ((100, 120), (640, 640), {"scaleup": False}), ((481, 641), (640, 640), {"auto": True}),
    ((300, 400), (256, 320), {"center": False}),
])
def test_letterbox_matches_reference(shape, new_shape, kwargs):
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    image = random_image(np.random.default_rng(sum(shape)), *shape)
    ours, ratio, (dw, dh) = T.letterbox(image, new_shape, **kwargs)
    theirs = LetterBox(new_shape, **kwargs)(image=image.copy())
    np.testing.assert_array_equal(ours, theirs)
    # the pad returned is the one the reference adds to boxes
    from ultralytics.data.augment import LetterBox as LB

    labels = {"img": image.copy(), "cls": np.zeros((1, 1)), "instances": reference_instances(
        np.array([[10.0, 20.0, 50.0, 60.0]]))}
    labels["instances"].normalize(shape[1], shape[0])
    out = LB(new_shape, **kwargs)(labels=labels)
    expected = out["instances"].bboxes[0]
    np.testing.assert_allclose(np.array([10, 20, 50, 60]) * ratio[0] + np.array([dw, dh, dw, dh]), expected,
                               rtol=1e-5, atol=1e-4)


def test_resize_long_side_by_hand():
    image = np.zeros((300, 500, 3), np.uint8)
    assert T.resize_long_side(image, 640).shape == (384, 640, 3)  # ceil(300 * 1.28) = 384
    assert T.resize_long_side(np.zeros((333, 517, 3), np.uint8), 320).shape == (207, 320, 3)  # ceil(206.1)


@pytest.mark.parity
def test_hsv_matches_reference():
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import RandomHSV

    image = random_image(np.random.default_rng(0), 96, 128)
    for seed in range(3):
        np.random.seed(seed)
        gains = np.random.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
        np.random.seed(seed)
        labels = {"img": image.copy()}
        RandomHSV(0.015, 0.7, 0.4)(labels)
        np.testing.assert_array_equal(T.apply_hsv(image, gains), labels["img"])
        np.testing.assert_array_equal(T.apply_hsv(image, gains, to_rgb=True), labels["img"][..., ::-1])


def test_flip_boxes_by_hand():
    boxes = np.array([[10.0, 20.0, 30.0, 50.0]], np.float32)
    np.testing.assert_array_equal(T.flip_boxes(boxes, (100, 80), True, False), [[70, 20, 90, 50]])
    np.testing.assert_array_equal(T.flip_boxes(boxes, (100, 80), False, True), [[10, 30, 30, 60]])


@pytest.mark.parametrize("contiguous", [True, False])
def test_to_bgr_into_out_drops_alpha_in_place(contiguous):
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, (20, 30, 4), np.uint8)
    batch = np.zeros((2, 20, 60 if not contiguous else 30, 3), np.uint8)
    out = batch[1] if contiguous else batch[1, :, ::2]
    assert T.to_bgr(bgra, out=out) is out
    np.testing.assert_array_equal(out, bgra[..., :3])
    assert not batch[0].any()
    T.to_bgr(bgra[..., :3].copy(), out=out)  # 3 channels: copied as they are
    np.testing.assert_array_equal(out, bgra[..., :3])


def test_mixup_is_weighted_sum_truncated():
    a, b = np.full((2, 2, 3), 200, np.uint8), np.full((2, 2, 3), 11, np.uint8)
    assert T.mixup_images(a, b, 0.25)[0, 0, 0] == int(200 * 0.25 + 11 * 0.75)  # 58.25 -> 58


def test_boxes_to_targets_pads_and_normalizes():
    out = T.boxes_to_targets(np.array([2], np.int32), np.array([[10.0, 20.0, 30.0, 60.0]]), (100, 200), 3)
    np.testing.assert_allclose(out["bboxes"][0], [0.2, 0.2, 0.2, 0.2])
    assert out["mask"].tolist() == [True, False, False] and out["cls"].tolist() == [2, 0, 0]
    assert out["num_dropped"] == 0


@pytest.mark.parity
def test_box_candidates_matches_reference():
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import RandomPerspective

    rng = np.random.default_rng(0)
    b1 = np.concatenate([rng.uniform(0, 100, (200, 2)), rng.uniform(100, 200, (200, 2))], 1)
    b2 = b1 + rng.uniform(-60, 10, size=b1.shape)
    expected = RandomPerspective().box_candidates(b1.T, b2.T)
    np.testing.assert_array_equal(P.box_candidates(b1, b2), expected)


class FakeMosaicDataset:
    """What the reference's Mosaic reads: buffer, get_image_and_label(i)."""

    def __init__(self, images, boxes):
        self.images, self.boxes = images, boxes
        self.buffer = list(range(len(images)))

    def get_image_and_label(self, i):
        h, w = self.images[i].shape[:2]
        inst = reference_instances(self.boxes[i])
        inst.normalize(w, h)
        inst.convert_bbox("xywh")
        return {"img": self.images[i].copy(), "resized_shape": (h, w), "cls": np.zeros((len(self.boxes[i]), 1)),
                "instances": inst, "im_file": str(i), "ori_shape": (h, w)}


def tiles_and_boxes(rng, s, n):
    images, boxes = [], []
    for _ in range(n):
        h, w = (s, int(rng.integers(s // 2, s + 1))) if rng.random() < 0.5 else (int(rng.integers(s // 2, s)), s)
        images.append(random_image(rng, h, w))
        xy = rng.uniform(0, [w - 8, h - 8], size=(3, 2))
        boxes.append(np.concatenate([xy, xy + rng.uniform(4, 60, size=(3, 2))], 1).astype(np.float32))
    return images, boxes


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mosaic4_matches_reference(seed, monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.data.augment as ref

    s = 128
    rng = np.random.default_rng(seed)
    images, boxes = tiles_and_boxes(rng, s, 4)
    fractions = list(rng.random(2))
    monkeypatch.setattr(ref.random, "uniform", reference_uniform([0.0] + fractions))  # p draw, then centre
    monkeypatch.setattr(ref.random, "choices", lambda pop, k: [1, 2, 3])
    dataset = FakeMosaicDataset(images, boxes)
    out = ref.Mosaic(dataset, imgsz=s, p=1.0)(dataset.get_image_and_label(0))
    center = M.sample_mosaic_center(FractionRng(fractions), s)
    canvas, cls, ours = M.mosaic4(images, [np.zeros(3, np.int32)] * 4, boxes, s, center)
    np.testing.assert_array_equal(canvas, out["img"])
    out["instances"].convert_bbox("xyxy")
    np.testing.assert_allclose(ours, out["instances"].bboxes, atol=1e-4)
    assert tuple(out["mosaic_border"]) == M.mosaic_border(s)


@pytest.mark.parity
def test_mosaic9_matches_reference(monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.data.augment as ref

    s = 64
    images, boxes = tiles_and_boxes(np.random.default_rng(3), s, 9)
    monkeypatch.setattr(ref.random, "uniform", lambda lo, hi: 0.0)
    monkeypatch.setattr(ref.random, "choices", lambda pop, k: list(range(1, 9)))
    dataset = FakeMosaicDataset(images, boxes)
    out = ref.Mosaic(dataset, imgsz=s, p=1.0, n=9)(dataset.get_image_and_label(0))
    canvas, _, ours = M.mosaic9(images, [np.zeros(3, np.int32)] * 9, boxes, s)
    np.testing.assert_array_equal(canvas, out["img"])
    out["instances"].convert_bbox("xyxy")
    np.testing.assert_allclose(ours, out["instances"].bboxes, atol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("seed,hyp", [
    (0, dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0)),
    (1, dict(degrees=10.0, translate=0.2, scale=0.9, shear=5.0, perspective=0.0)),
    (2, dict(degrees=5.0, translate=0.1, scale=0.5, shear=2.0, perspective=0.0005)),
])
def test_random_perspective_matches_reference(seed, hyp, monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.data.augment as ref

    rng = np.random.default_rng(seed)
    s = 96
    canvas = random_image(rng, 2 * s, 2 * s)
    xy = rng.uniform(0, 2 * s - 40, size=(12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 40, size=(12, 2))], 1).astype(np.float32)
    fractions = list(rng.random(8))
    monkeypatch.setattr(ref.random, "uniform", reference_uniform(fractions))
    labels = {"img": canvas.copy(), "cls": np.arange(12)[:, None], "instances": reference_instances(boxes),
              "mosaic_border": M.mosaic_border(s)}
    out = ref.RandomPerspective(**hyp)(labels)

    params = P.sample_warp(FractionRng(fractions), canvas.shape[:2], M.mosaic_border(s), **hyp)
    image = P.warp_image(canvas, params.matrix, params.out_size, params.is_perspective)
    cls, ours, _ = P.warp_labels(np.arange(12), boxes, params)
    np.testing.assert_array_equal(image, out["img"])
    np.testing.assert_array_equal(cls, out["cls"][:, 0])
    np.testing.assert_allclose(ours, out["instances"].bboxes, atol=1e-3)


@pytest.mark.parametrize("flip_lr,flip_ud", [(True, False), (False, True), (True, True)])
def test_flip_folded_into_warp_equals_flipping_after(flip_lr, flip_ud):
    rng = np.random.default_rng(4)
    image = random_image(rng, 80, 100)
    params = P.sample_warp(rng, image.shape[:2], (0, 0), degrees=7.0, shear=3.0)
    warped = P.warp_image(image, params.matrix, params.out_size, False)
    expected = warped[::-1] if flip_ud else warped
    expected = expected[:, ::-1] if flip_lr else expected
    fused = P.warp_image(image, params.matrix, params.out_size, False,
                         pixel_flip=P.flip_matrix(params.out_size, flip_lr, flip_ud))
    # bilinear weights of the mirrored sample positions differ only in float rounding
    assert np.abs(fused.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("seed,hyp", [(0, {}), (1, dict(degrees=10.0, shear=4.0)), (2, dict(perspective=0.0008))])
def test_windowed_mosaic_render_equals_full_canvas_warp(seed, hyp):
    """RandomPerspective renders only the canvas window its warp reads; the output equals warping the full canvas
    (up to one grey level where OpenCV's fixed-point coordinates round differently, on a tiny fraction of pixels)."""
    s = 128
    rng = np.random.default_rng(seed)
    images, boxes = tiles_and_boxes(rng, s, 4)
    images = [T.to_bgra(im) for im in images]
    placements = M.layout4([im.shape[:2] for im in images], s, M.sample_mosaic_center(rng, s))
    params = P.sample_warp(rng, (2 * s, 2 * s), M.mosaic_border(s), **hyp)
    full = P.warp_image(M.render_canvas(images, placements, 2 * s), params.matrix, params.out_size,
                        params.is_perspective)
    window = P.source_window(params, (2 * s, 2 * s))
    part = M.render_canvas(images, placements, 2 * s, window)
    assert part.shape[0] * part.shape[1] < (2 * s) ** 2
    fast = P.warp_image(part, params.matrix, params.out_size, params.is_perspective, origin=window[:2])
    diff = np.abs(fast.astype(int) - full.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01

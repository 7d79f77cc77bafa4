"""yolojax.ops.anchors: hand computations and exact parity with ultralytics 8.2.103 (ultralytics.utils.tal)."""
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.anchors import bbox2dist, dist2bbox, make_anchors

LEVELS_640 = [(80, 80), (40, 40), (20, 20)]
LEVELS_RECT = [(48, 80), (24, 40), (12, 20)]


def test_make_anchors_by_hand():
    points, strides = make_anchors([(2, 3), (1, 1)], (8, 16))
    expected = [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    np.testing.assert_array_equal(np.asarray(points), expected)
    np.testing.assert_array_equal(np.asarray(strides)[:, 0], [8] * 6 + [16])


def test_make_anchors_rejects_mismatched_strides():
    with pytest.raises(ValueError, match="strides"):
        make_anchors([(2, 2)], (8, 16))


def test_dist2bbox_by_hand():
    dist = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    anchor = jnp.array([[10.0, 10.0]])
    np.testing.assert_array_equal(np.asarray(dist2bbox(dist, anchor)), [[9.0, 8.0, 13.0, 14.0]])
    np.testing.assert_array_equal(np.asarray(dist2bbox(dist, anchor, xywh=True)), [[11.0, 11.0, 4.0, 6.0]])


def test_bbox2dist_clips_to_dfl_range_by_hand():
    out = bbox2dist(jnp.array([[10.0, 10.0]]), jnp.array([[11.0, -20.0, 12.0, 40.0]]), reg_max=15)
    np.testing.assert_allclose(np.asarray(out), [[0.0, 14.99, 2.0, 14.99]], rtol=1e-7)


@pytest.mark.parity
@pytest.mark.parametrize("levels", [LEVELS_640, LEVELS_RECT])
def test_make_anchors_matches_reference_exactly(levels):
    torch = pytest.importorskip("torch")
    tal = pytest.importorskip("ultralytics.utils.tal")
    feats = [torch.zeros(1, 1, h, w) for h, w in levels]
    ref_points, ref_strides = tal.make_anchors(feats, torch.tensor([8.0, 16.0, 32.0]), 0.5)
    points, strides = make_anchors(levels, (8, 16, 32))
    np.testing.assert_array_equal(np.asarray(points), ref_points.numpy())
    np.testing.assert_array_equal(np.asarray(strides), ref_strides.numpy())


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_dist2bbox_and_bbox2dist_match_reference_exactly(seed):
    torch = pytest.importorskip("torch")
    tal = pytest.importorskip("ultralytics.utils.tal")
    rng = np.random.default_rng(seed)
    points = np.array(make_anchors(LEVELS_640, (8, 16, 32))[0])
    dist = rng.uniform(0, 15, size=(2, len(points), 4)).astype(np.float32)
    for xywh in (False, True):
        expected = tal.dist2bbox(torch.from_numpy(dist), torch.from_numpy(points), xywh=xywh).numpy()
        np.testing.assert_array_equal(np.asarray(dist2bbox(dist, points, xywh=xywh)), expected)
    boxes = (np.tile(points, 2)[None] + rng.uniform(-20, 20, size=(2, len(points), 4))).astype(np.float32)
    expected = tal.bbox2dist(torch.from_numpy(points), torch.from_numpy(boxes), 15).numpy()
    np.testing.assert_array_equal(np.asarray(bbox2dist(points, boxes, 15)), expected)

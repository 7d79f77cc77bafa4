"""yolojax.ops.boxes: hand computations and parity with ultralytics 8.2.103 (ultralytics.utils.ops / metrics)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.boxes import bbox_iou, box_area, box_iou, xywh2xyxy, xyxy2xywh

KIND_FLAGS = {"iou": {}, "giou": {"GIoU": True}, "diou": {"DIoU": True}, "ciou": {"CIoU": True}}


def random_xyxy(rng, n, scale=640.0):
    """(n, 4) xyxy pixels: mixed sizes from sub-pixel to half the image, some zero-width, some far apart."""
    xy = rng.uniform(0, scale, size=(n, 2))
    wh = np.exp(rng.uniform(np.log(0.05), np.log(scale / 2), size=(n, 2)))
    wh[: n // 20, 0] = 0.0  # degenerate: zero width
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


def test_xywh2xyxy_by_hand():
    out = xywh2xyxy(jnp.array([[10.0, 20.0, 4.0, 6.0]]))
    np.testing.assert_array_equal(np.asarray(out), [[8.0, 17.0, 12.0, 23.0]])


def test_xyxy2xywh_by_hand():
    out = xyxy2xywh(jnp.array([[8.0, 17.0, 12.0, 23.0]]))
    np.testing.assert_array_equal(np.asarray(out), [[10.0, 20.0, 4.0, 6.0]])


def test_box_area_by_hand():
    assert float(box_area(jnp.array([1.0, 2.0, 4.0, 7.0]))) == 15.0


def test_box_iou_by_hand():
    # two 2x2 squares overlapping in a 1x1 square: 1 / (4 + 4 - 1)
    out = box_iou(jnp.array([[0.0, 0.0, 2.0, 2.0]]), jnp.array([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]]))
    np.testing.assert_allclose(np.asarray(out), [[1 / 7, 0.0]], rtol=1e-6)


def test_giou_of_disjoint_boxes_by_hand():
    # [0,0,1,1] and [2,0,3,1]: IoU 0, enclosing box 3x1, union 2 -> GIoU = 0 - (3 - 2) / 3
    out = bbox_iou(jnp.array([0.0, 0.0, 1.0, 1.0]), jnp.array([2.0, 0.0, 3.0, 1.0]), kind="giou", eps=0.0)
    np.testing.assert_allclose(float(out), -1 / 3, rtol=1e-6)


def test_bbox_iou_broadcasts_to_shape_without_last_axis():
    out = bbox_iou(jnp.zeros((3, 1, 4)), jnp.ones((1, 5, 4)), kind="ciou")
    assert out.shape == (3, 5)


def test_bbox_iou_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        bbox_iou(jnp.zeros(4), jnp.zeros(4), kind="eiou")


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xywh_conversions_match_reference_exactly(seed):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("ultralytics.utils.ops")
    boxes = random_xyxy(np.random.default_rng(seed), 1000)
    np.testing.assert_array_equal(np.asarray(xyxy2xywh(boxes)), ops.xyxy2xywh(torch.from_numpy(boxes)).numpy())
    xywh = ops.xyxy2xywh(torch.from_numpy(boxes)).numpy()
    np.testing.assert_array_equal(np.asarray(xywh2xyxy(xywh)), ops.xywh2xyxy(torch.from_numpy(xywh)).numpy())


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_box_iou_matches_reference(seed):
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    rng = np.random.default_rng(seed)
    a, b = random_xyxy(rng, 300), random_xyxy(rng, 200)
    expected = metrics.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(np.asarray(box_iou(a, b)), expected, rtol=0, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bbox_iou_matches_reference(kind, seed):
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    rng = np.random.default_rng(seed)
    b1, b2 = random_xyxy(rng, 5000), random_xyxy(rng, 5000)
    b2[:500] = b1[:500] + rng.normal(0, 2, size=(500, 4)).astype(np.float32)  # overlapping pairs too
    expected = metrics.bbox_iou(torch.from_numpy(b1), torch.from_numpy(b2), xywh=False, **KIND_FLAGS[kind])
    np.testing.assert_allclose(np.asarray(bbox_iou(b1, b2, kind=kind)), expected.numpy()[:, 0], rtol=0, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_ciou_gradient_matches_reference(seed):
    """CIoU's trade-off weight is a constant for autograd in the reference; the gradients must agree."""
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    rng = np.random.default_rng(seed)
    b1 = random_xyxy(rng, 2000)
    b1[:, 2:] += 0.5  # keep widths positive: a gradient at a zero-width box is a kink in both
    b2 = b1 + rng.normal(0, 3, size=b1.shape).astype(np.float32)
    t1 = torch.from_numpy(b1).requires_grad_(True)
    metrics.bbox_iou(t1, torch.from_numpy(b2), xywh=False, CIoU=True).sum().backward()
    grad = jax.grad(lambda x: bbox_iou(x, b2, kind="ciou").sum())(jnp.asarray(b1))
    expected = t1.grad.numpy()
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=0, atol=1e-4 * np.abs(expected).max())

"""IoU matcher and balanced sampler of the two-stage path (torchvision's Matcher / BalancedPositiveNegativeSampler)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.assign.matcher import (
    anchor_labels,
    match_boxes,
    proposal_labels,
    sample_balanced,
)
from yolojax.ops.boxes import box_iou


def _boxes(rng, n, size=200.0, max_wh=80.0):
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(4, max_wh, (n, 2))], 1).astype(np.float32)


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("high, low, low_quality", [(0.7, 0.3, True), (0.5, 0.5, False)])
def test_match_boxes_matches_torchvision(seed, high, low, low_quality):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import Matcher
    from torchvision.ops import box_iou as tv_box_iou
    rng = np.random.default_rng(seed)
    gt, anchors = _boxes(rng, 6), _boxes(rng, 400)
    anchors[:50] = np.round(anchors[:50] / 16) * 16  # grid-like anchors: ties for a gt's best IoU
    iou = tv_box_iou(torch.from_numpy(gt), torch.from_numpy(anchors))
    expected = Matcher(high, low, low_quality)(iou).numpy()
    padded_gt = np.concatenate([gt, np.zeros((3, 4), np.float32)])  # padding rows must not match
    mask = np.arange(9) < 6
    out = match_boxes(box_iou(jnp.asarray(padded_gt), jnp.asarray(anchors), eps=0.0), jnp.asarray(mask), high, low,
                      low_quality)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_low_quality_match_rescues_an_isolated_gt():
    # the gt overlaps its best anchor with IoU 0.25 (< 0.3): low-quality matching still makes that anchor positive
    gt = jnp.array([[0.0, 0.0, 10.0, 10.0]])
    anchors = jnp.array([[0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 60.0, 60.0]])
    labels, matched = anchor_labels(gt, jnp.array([True]), anchors)
    np.testing.assert_array_equal(labels, [1.0, 0.0])
    np.testing.assert_array_equal(matched[0], gt[0])


def test_no_ground_truth_means_all_background():
    labels, _ = anchor_labels(jnp.zeros((4, 4)), jnp.zeros((4,), bool), jnp.asarray(_boxes(np.random.default_rng(0),
                                                                                             10)))
    np.testing.assert_array_equal(labels, np.zeros(10))


def test_proposal_labels_classes_background_ignore_and_padding():
    gt = jnp.array([[0.0, 0.0, 10.0, 10.0]])
    proposals = jnp.array([[0.0, 0.0, 10.0, 9.0],    # IoU 0.9 -> class 3
                           [0.0, 0.0, 10.0, 4.0],    # IoU 0.4 -> background (< 0.5)
                           [0.0, 0.0, 10.0, 10.0]])  # padding row -> ignored
    labels, _ = proposal_labels(gt, jnp.array([3]), jnp.array([True]), proposals, jnp.array([True, True, False]))
    np.testing.assert_array_equal(labels, [3, 0, -1])


def test_sampler_counts_follow_the_reference_rule():
    labels = jnp.asarray(np.r_[np.ones(300), np.zeros(1000), -np.ones(50)])
    pos, neg, order, valid = sample_balanced(jax.random.key(0), labels, 256, 0.5)
    assert int(pos.sum()) == 128 and int(neg.sum()) == 128 and not bool(jnp.any(pos & neg))
    assert bool(jnp.all(labels[pos] == 1)) and bool(jnp.all(labels[neg] == 0)) and bool(valid.all())
    np.testing.assert_array_equal(np.sort(np.asarray(order)), np.sort(np.nonzero(np.asarray(pos | neg))[0]))
    # few positives: the negatives fill the batch
    pos, neg, _, _ = sample_balanced(jax.random.key(0), labels.at[10:300].set(0), 256, 0.5)
    assert int(pos.sum()) == 10 and int(neg.sum()) == 246


def test_sampler_pads_when_too_few_candidates():
    labels = jnp.asarray(np.r_[np.ones(3), np.zeros(5), -np.ones(20)])
    pos, neg, order, valid = sample_balanced(jax.random.key(1), labels, 16, 0.25)
    assert int(pos.sum()) == 3 and int(neg.sum()) == 5
    np.testing.assert_array_equal(valid, np.arange(16) < 8)
    np.testing.assert_array_equal(np.sort(np.asarray(order[:3])), [0, 1, 2])  # positives first
    _, _, order, valid = sample_balanced(jax.random.key(1), labels, 40, 0.25)  # more rows than candidates
    assert order.shape == (40,) and int(valid.sum()) == 8


def test_sampler_is_a_function_of_the_key():
    labels = jnp.asarray(np.r_[np.ones(400), np.zeros(400)])
    a = sample_balanced(jax.random.key(5), labels, 64, 0.5)[0]
    b = sample_balanced(jax.random.key(5), labels, 64, 0.5)[0]
    c = sample_balanced(jax.random.key(6), labels, 64, 0.5)[0]
    np.testing.assert_array_equal(a, b)
    assert bool(jnp.any(a != c))

"""Proposal layer (static shapes) against torchvision's RegionProposalNetwork.filter_proposals, and the RPN head."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.assign.rpn import rpn_targets
from yolojax.models.rpn import RPNHead
from yolojax.ops.anchors import rpn_grid_anchors
from yolojax.ops.proposals import filter_proposals


def _inputs(seed, b=2, per_level=(1200, 300, 75)):
    rng = np.random.default_rng(seed)
    a = sum(per_level)
    xy = rng.uniform(-20, 260, (b, a, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(0, 120, (b, a, 2))], -1).astype(np.float32)
    proposals[:, ::50, 2] = proposals[:, ::50, 0] + 1e-4  # below min_size
    return proposals, rng.normal(size=(b, a)).astype(np.float32)


@pytest.mark.parity
@pytest.mark.parametrize("seed, pre, post, score_thresh, padded", [(0, 500, 300, 0.3, False),
                                                                    (1, 2000, 1500, 0.0, True)])
def test_filter_proposals_matches_torchvision(seed, pre, post, score_thresh, padded):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.rpn import RegionProposalNetwork
    per_level = (1200, 300, 75)
    proposals, logits = _inputs(seed, per_level=per_level)
    sizes = [(240, 250), (200, 256)]
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {"training": pre, "testing": pre},
                                {"training": post, "testing": post}, 0.7, score_thresh=score_thresh).eval()
    ref_boxes, ref_scores = rpn.filter_proposals(torch.from_numpy(proposals), torch.from_numpy(logits), sizes,
                                                 list(per_level))
    run = jax.jit(lambda p, o, hw: filter_proposals(p, o, hw, per_level, pre_nms_top_n=pre, post_nms_top_n=post,
                                                    score_thresh=score_thresh))
    boxes, scores, valid = run(proposals, logits, jnp.array(sizes))
    for i in range(2):
        n = int(valid[i].sum())
        assert n == len(ref_boxes[i]) and bool(valid[i, :n].all())  # valid rows first, then padding
        np.testing.assert_array_equal(np.asarray(boxes[i, :n]), ref_boxes[i].numpy())
        np.testing.assert_allclose(np.asarray(scores[i, :n]), ref_scores[i].numpy(), rtol=1e-6)
    assert padded == (not bool(valid.all()))  # the second case keeps fewer than post rows: padding exercised


def test_rpn_head_layout_follows_anchor_order():
    levels = [jnp.ones((2, 4, 6, 8)), jnp.ones((2, 2, 3, 8))]
    head = RPNHead(num_anchors=3)
    variables = head.init(jax.random.key(0), levels)
    objectness, deltas = head.apply(variables, levels)
    anchors, counts = rpn_grid_anchors([(4, 6), (2, 3)], [8, 16], [(32,), (64,)], [(0.5, 1.0, 2.0)] * 2)
    assert objectness.shape == (2, anchors.shape[0]) and deltas.shape == (2, anchors.shape[0], 4)
    # constant input: every location of a level gives the same 3 logits, repeating with period 3 (anchor-minor)
    first = np.asarray(objectness[0, :counts[0]]).reshape(-1, 3)
    interior = first.reshape(4, 6, 3)[1:-1, 1:-1]  # away from the zero padding of the 3x3 conv
    np.testing.assert_allclose(interior, np.broadcast_to(interior[0, 0], interior.shape), rtol=1e-6)


def test_rpn_targets_sample_256_with_half_positive_at_most():
    anchors, _ = rpn_grid_anchors([(16, 16)], [8], [(16, 32)], [(0.5, 1.0, 2.0)])
    gt = jnp.array([[[10.0, 10.0, 40.0, 50.0], [60.0, 60.0, 120.0, 110.0], [0, 0, 0, 0]]])
    labels, positive, negative, deltas = rpn_targets(jax.random.key(0), anchors, gt, jnp.array([[True, True, False]]))
    assert int(positive.sum()) == int(min((labels == 1).sum(), 128)) and int((positive | negative).sum()) == 256
    assert bool(jnp.all(jnp.isfinite(deltas))) and bool(jnp.all(deltas[labels != 1] == 0))

"""RPN loss and Fast R-CNN loss against torchvision, given the same sampled elements."""
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.losses.rpn import fast_rcnn_loss, rpn_loss, smooth_l1


def test_smooth_l1_hand_values():
    beta = 1 / 9
    np.testing.assert_allclose(smooth_l1(jnp.array([0.05, -0.05, 1.0]), beta),
                               [0.5 * 0.0025 * 9, 0.5 * 0.0025 * 9, 1.0 - 0.5 / 9], rtol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_rpn_loss_matches_torchvision_compute_loss(seed):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.rpn import RegionProposalNetwork
    rng = np.random.default_rng(seed)
    b, a = 2, 500
    logits = rng.normal(size=(b, a)).astype(np.float32)
    deltas = rng.normal(size=(b, a, 4)).astype(np.float32)
    targets = rng.normal(size=(b, a, 4)).astype(np.float32) * 0.2
    labels = rng.choice([1.0, 0.0, -1.0], size=(b, a), p=[0.1, 0.8, 0.1]).astype(np.float32)
    positive = (labels == 1) & (rng.uniform(size=(b, a)) < 0.7)
    negative = (labels == 0) & (rng.uniform(size=(b, a)) < 0.3)

    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {"training": 1, "testing": 1},
                                {"training": 1, "testing": 1}, 0.7)
    rpn.fg_bg_sampler = lambda _: ([torch.from_numpy(p.astype(np.uint8)) for p in positive],
                                   [torch.from_numpy(n.astype(np.uint8)) for n in negative])
    ref_obj, ref_box = rpn.compute_loss(torch.from_numpy(logits.reshape(-1, 1)),
                                        torch.from_numpy(deltas.reshape(-1, 4)),
                                        list(torch.from_numpy(labels)), list(torch.from_numpy(targets)))
    obj, box = rpn_loss(jnp.asarray(logits), jnp.asarray(deltas), jnp.asarray(labels), jnp.asarray(targets),
                        jnp.asarray(positive), jnp.asarray(negative))
    np.testing.assert_allclose(obj, ref_obj.item(), rtol=1e-6)
    np.testing.assert_allclose(box, ref_box.item(), rtol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_rcnn_loss_matches_torchvision(seed):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import fastrcnn_loss
    rng = np.random.default_rng(seed)
    b, r, k = 2, 64, 3
    logits = rng.normal(size=(b, r, k + 1)).astype(np.float32)
    deltas = rng.normal(size=(b, r, (k + 1) * 4)).astype(np.float32)
    targets = rng.normal(size=(b, r, 4)).astype(np.float32)
    labels = rng.integers(0, k + 1, (b, r)).astype(np.int32)
    sampled = rng.uniform(size=(b, r)) < 0.8  # the rest are padding rows the reference never sees
    ref_cls, ref_box = fastrcnn_loss(torch.from_numpy(logits[sampled]), torch.from_numpy(deltas[sampled]),
                                     [torch.from_numpy(labels[sampled]).long()], [torch.from_numpy(targets[sampled])])
    cls, box = fast_rcnn_loss(jnp.asarray(logits), jnp.asarray(deltas), jnp.asarray(labels), jnp.asarray(targets),
                              jnp.asarray(sampled))
    np.testing.assert_allclose(cls, ref_cls.item(), rtol=1e-6)
    np.testing.assert_allclose(box, ref_box.item(), rtol=1e-6)

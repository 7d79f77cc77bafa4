"""RoI Pool / RoI Align: torchvision's values and gradients on random inputs, plus hand-computed cases."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.roi import roi_align, roi_align_per_image, roi_pool


def _inputs(seed, n=2, c=3, h=13, w=17, k=40, scale=0.5, ties=False):
    """NHWC features and (k, 5) RoIs in image pixels: some partly outside the image, some tiny."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, h, w, c)).astype(np.float32)
    if ties:  # many equal values, like ReLU outputs
        features = np.maximum(np.round(features), 0).astype(np.float32)
    img_h, img_w = h / scale, w / scale
    xy = rng.uniform(-0.2, 1.0, (k, 2)) * [img_w, img_h]
    wh = rng.uniform(0, 1.1, (k, 2)) * [img_w, img_h] * rng.uniform(0, 1, (k, 1))
    batch = rng.integers(0, n, (k, 1))
    return features, np.concatenate([batch, xy, xy + wh], 1).astype(np.float32)


def _torch_op(name, features, rois, *args):
    torch = pytest.importorskip("torch")
    import torchvision
    x = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    out = getattr(torchvision.ops, name)(x, torch.from_numpy(rois), *args)
    cotangent = torch.from_numpy(np.random.default_rng(0).normal(size=out.shape).astype(np.float32))
    (out * cotangent).sum().backward()
    return (out.detach().permute(0, 2, 3, 1).numpy(), x.grad.permute(0, 2, 3, 1).numpy(),
            cotangent.permute(0, 2, 3, 1).numpy())


def _ours(fn, features, rois, cotangent):
    value, vjp = jax.vjp(lambda f: fn(f, jnp.asarray(rois)), jnp.asarray(features))
    return np.asarray(value), np.asarray(vjp(jnp.asarray(cotangent))[0])


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sampling_ratio, aligned, method", [(-1, False, "matmul"), (-1, True, "matmul"),
                                                             (2, False, "matmul"), (3, True, "matmul"),
                                                             (2, False, "gather"), (1, True, "gather")])
def test_roi_align_matches_torchvision(seed, sampling_ratio, aligned, method):
    scale = (0.5, 1 / 3)[seed]
    features, rois = _inputs(seed, h=(13, 17)[seed], w=(17, 13)[seed], scale=scale)  # wide and tall maps
    ref_out, ref_grad, cot = _torch_op("roi_align", features, rois, (7, 6), scale, sampling_ratio, aligned)
    fn = jax.jit(partial(roi_align, output_size=(7, 6), spatial_scale=scale, sampling_ratio=sampling_ratio,
                         aligned=aligned, method=method))
    out, grad = _ours(fn, features, rois, cot)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-5)


@pytest.mark.parity
def test_roi_align_adaptive_grid_on_large_rois():
    # 60 x 80 map at scale 1: RoIs up to the whole map -> up to ceil(80 / 7) = 12 samples per bin and axis
    features, rois = _inputs(7, n=1, c=4, h=60, w=80, k=30, scale=1.0)
    ref_out, ref_grad, cot = _torch_op("roi_align", features, rois, (7, 7), 1.0, 0, False)
    out, grad = _ours(jax.jit(partial(roi_align, spatial_scale=1.0, sampling_ratio=0)), features, rois, cot)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True), (3, True)])
def test_roi_pool_matches_torchvision_exactly(seed, ties):
    scale = (0.5, 1 / 3, 0.25, 0.125)[seed]
    features, rois = _inputs(seed, scale=scale, ties=ties)
    ref_out, ref_grad, cot = _torch_op("roi_pool", features, rois, (7, 6), scale)
    out, grad = _ours(jax.jit(partial(roi_pool, output_size=(7, 6), spatial_scale=scale)), features, rois, cot)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-5)  # same argmax; only the sum order differs


def test_roi_align_of_a_ramp_is_the_bin_centre():
    # features[y, x] = x: bilinear sampling reproduces x exactly, so each bin averages to its centre's x
    ramp = jnp.broadcast_to(jnp.arange(20.0)[None, None, :, None], (1, 10, 20, 1))
    rois = jnp.array([[0, 2.0, 1.0, 16.0, 8.0]])
    out = jax.jit(partial(roi_align, output_size=(2, 7), sampling_ratio=2, aligned=True))(ramp, rois)
    centres = 2.0 - 0.5 + (np.arange(7) + 0.5) * 2.0  # 14 px wide RoI, 7 bins of 2 px, -0.5 for aligned
    np.testing.assert_allclose(out[0, 0, :, 0], centres, rtol=1e-6)


def test_roi_pool_hand_case_and_empty_bins():
    features = jnp.arange(16.0).reshape(1, 4, 4, 1)
    rois = jnp.array([[0, 0.0, 0.0, 3.0, 3.0],       # the whole map: 2 x 2 bins of 2 x 2 cells
                      [0, 10.0, 10.0, 12.0, 12.0]])  # outside the map: every bin empty -> 0
    out = jax.jit(partial(roi_pool, output_size=(2, 2)))(features, rois)
    np.testing.assert_array_equal(out[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(out[1], 0)


def test_per_image_layout_equals_batch_index_layout():
    features, rois = _inputs(4, n=3, k=12, h=15, w=11)
    boxes = rois[:, 1:].reshape(3, 4, 4)
    indexed = np.concatenate([np.repeat(np.arange(3.0), 4)[:, None], boxes.reshape(12, 4)], 1)
    expected = jax.jit(partial(roi_align, spatial_scale=0.5, sampling_ratio=2))(features, indexed)
    for method in ("matmul", "gather"):
        out = jax.jit(partial(roi_align_per_image, spatial_scale=0.5, sampling_ratio=2, method=method))(features,
                                                                                                       boxes)
        np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-6, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="roi_align: rois must be"):
        roi_align(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="method='gather' needs a fixed sampling_ratio"):
        roi_align(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 5)), sampling_ratio=0, method="gather")
    with pytest.raises(ValueError, match="roi_pool: features must be"):
        roi_pool(jnp.zeros((4, 4, 2)), jnp.zeros((3, 5)))

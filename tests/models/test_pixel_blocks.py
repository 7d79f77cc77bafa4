"""Convolutions over 2x2 pixel blocks give the convolutions over pixels: layout round trip, the 3x3 stride-1
convolution and its gradients, and a whole C2f block trained on blocks against the same block on pixels."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.models.layers import (
    BLOCKS_MIN_INFERENCE_BATCH,
    C2f,
    Conv,
    conv2d_same,
    conv3x3_on_pixel_blocks,
    from_pixel_blocks,
    runs_on_pixel_blocks,
    to_pixel_blocks,
)
from yolojax.models.yolov8 import YOLOv8


def test_pixel_blocks_layout_round_trips_and_keeps_each_block_together():
    x = jnp.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    blocks = to_pixel_blocks(x)
    assert blocks.shape == (2, 2, 12, 3)
    np.testing.assert_array_equal(from_pixel_blocks(blocks), x)
    # block (1, 2) of image 1: pixels (2, 4), (2, 5), (3, 4), (3, 5) as columns 8..11 of block row 1
    np.testing.assert_array_equal(blocks[1, 1, 8:12], x[1, [2, 2, 3, 3], [4, 5, 4, 5]])


@pytest.mark.parametrize("seed, shape, c_out", [(0, (2, 8, 6, 4), 5), (1, (1, 6, 10, 16), 16), (2, (3, 2, 2, 3), 2)])
def test_3x3_convolution_on_pixel_blocks_gives_the_pixel_convolution_and_its_gradients(seed, shape, c_out):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], c_out)), jnp.float32)
    on_blocks = lambda x, k: from_pixel_blocks(conv3x3_on_pixel_blocks(to_pixel_blocks(x), k))  # noqa: E731
    on_pixels = lambda x, k: conv2d_same(x, k, 1)  # noqa: E731
    np.testing.assert_allclose(on_blocks(x, kernel), on_pixels(x, kernel), rtol=1e-5, atol=1e-4)

    def loss(fn):
        return lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
    got = jax.grad(loss(on_blocks), (0, 1))(x, kernel)
    want = jax.grad(loss(on_pixels), (0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("repeats, shortcut", [(1, True), (2, False)])
def test_c2f_trained_on_pixel_blocks_equals_it_on_pixels(repeats, shortcut):
    """Output, updated BatchNorm statistics and parameter gradients of one training forward, float32."""
    x = jax.random.normal(jax.random.key(repeats), (2, 8, 12, 6))
    pixels = C2f(8, repeats, shortcut, on_blocks=False)
    blocks = C2f(8, repeats, shortcut, on_blocks=True)
    variables = pixels.init(jax.random.key(0), x, train=False)

    def run(module):
        def loss(params):
            y, state = module.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y)), (y, state)
        return jax.grad(loss, has_aux=True)(variables["params"])

    (grads_p, (y_p, state_p)), (grads_b, (y_b, state_b)) = run(pixels), run(blocks)
    np.testing.assert_allclose(y_b, y_p, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(state_b), jax.tree.leaves(state_p)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads_p)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_only_narrow_half_precision_blocks_of_training_or_large_batches_run_on_pixel_blocks():
    x = jnp.zeros((2, 160, 160, 32))
    assert runs_on_pixel_blocks(x, 16, jnp.bfloat16, train=True)
    assert runs_on_pixel_blocks(x, 32, jnp.float16, train=True)
    assert not runs_on_pixel_blocks(x, 64, jnp.bfloat16, train=True)  # wide enough for cuDNN's fast kernels
    assert not runs_on_pixel_blocks(x, 16, jnp.float32, train=True)
    assert not runs_on_pixel_blocks(x, 16, jnp.bfloat16, train=False)  # a small inference batch stays on pixels
    large = jnp.zeros((BLOCKS_MIN_INFERENCE_BATCH, 160, 160, 32))
    assert runs_on_pixel_blocks(large, 16, jnp.bfloat16, train=False)
    assert not runs_on_pixel_blocks(jnp.zeros((2, 15, 16, 32)), 16, jnp.bfloat16, train=True)


@pytest.mark.parametrize("seed, shape, c_out", [(0, (2, 8, 12, 3), 16), (1, (1, 16, 8, 5), 4)])
def test_stride2_convolution_from_or_to_pixel_blocks_gives_the_pixel_convolution_and_its_gradients(seed, shape, c_out):
    from yolojax.models.layers import conv3x3_stride2_by_blocks

    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], c_out)), jnp.float32)
    variants = {
        "blocks out": lambda x, k: from_pixel_blocks(conv3x3_stride2_by_blocks(x, k, 8, blocks_out=True)),
        "blocks in": lambda x, k: conv3x3_stride2_by_blocks(to_pixel_blocks(x), k, 8, blocks_in=True),
    }
    on_pixels = lambda x, k: conv2d_same(x, k, 2)  # noqa: E731

    def loss(fn):
        return lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
    want = jax.grad(loss(on_pixels), (0, 1))(x, kernel)
    for name, fn in variants.items():
        np.testing.assert_allclose(fn(x, kernel), on_pixels(x, kernel), rtol=1e-5, atol=1e-4, err_msg=name)
        for g, w in zip(jax.grad(loss(fn), (0, 1))(x, kernel), want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


def test_4x4_pixel_blocks_are_space_to_depth():
    x = jnp.arange(1 * 8 * 4 * 2).reshape(1, 8, 4, 2)
    blocks = to_pixel_blocks(x, 4).reshape(1, 2, 1, 32)
    np.testing.assert_array_equal(blocks[0, 1, 0].reshape(4, 4, 2), x[0, 4:8, 0:4])


def _convolutions_by_blocks(model, variables, images) -> list[bool]:
    """Each Conv's choice, in call order, of computing over pixel blocks during `model`'s eval forward."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, Conv) and context.method_name == "convolve":
            seen.append(context.module._runs_by_blocks(args[0]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, images, train=False)
    return seen


def test_inference_blocks_off_keeps_every_convolution_on_pixels():
    model = YOLOv8("n", num_classes=3, dtype=jnp.bfloat16)
    images = jnp.zeros((1, 64, 64, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    by_blocks = _convolutions_by_blocks(model, variables, images)
    assert sum(by_blocks) >= 2  # the narrow stride-2 convolutions (stem, layer 1) compute over blocks inside
    assert not any(_convolutions_by_blocks(model.clone(inference_blocks=False), variables, images))  # the export's

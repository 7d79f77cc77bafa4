"""batch_norm_silu: values and the hand-written gradient against autodiff of the plain formula."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.norm import batch_norm_silu, channel_sums

EPS = 1e-3


def plain(x, scale, bias):
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = jnp.maximum(jnp.square(x).mean(axes) - jnp.square(mean), 0.0)
    y = (x - mean) * (jax.lax.rsqrt(var + EPS) * scale) + bias
    return jax.nn.silu(y), mean, var


def _inputs(seed, shape=(4, 6, 5, 7)):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(1.5, 2.0, size=shape), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, size=shape[-1]), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    weights = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in (shape, shape[-1:], shape[-1:])]
    return x, scale, bias, weights


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_match_autodiff(seed):
    x, scale, bias, weights = _inputs(seed)

    def loss(fn, with_stats):
        def f(x, scale, bias):
            y, mean, var = fn(x, scale, bias)
            total = jnp.sum(y * weights[0])
            return total + (jnp.sum(mean * weights[1]) + jnp.sum(var * weights[2]) if with_stats else 0.0)
        return f

    ours = lambda x, s, b: batch_norm_silu(x, s, b, EPS)  # noqa: E731
    for got, want in zip(ours(x, scale, bias), plain(x, scale, bias)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for with_stats in (False, True):
        got = jax.grad(loss(ours, with_stats), argnums=(0, 1, 2))(x, scale, bias)
        want = jax.grad(loss(plain, with_stats), argnums=(0, 1, 2))(x, scale, bias)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_half_precision_input_gives_half_output_and_float32_statistics():
    x, scale, bias, _ = _inputs(3)
    y, mean, var = batch_norm_silu(x.astype(jnp.bfloat16), scale, bias, EPS)
    assert y.dtype == jnp.bfloat16 and mean.dtype == jnp.float32 and var.dtype == jnp.float32
    want = plain(x.astype(jnp.bfloat16).astype(jnp.float32), scale, bias)[0]
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=2**-8, atol=1e-6)
    dx = jax.grad(lambda v: jnp.sum(batch_norm_silu(v, scale, bias, EPS)[0].astype(jnp.float32)))(
        x.astype(jnp.bfloat16))
    assert dx.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(dx.astype(jnp.float32))))


@pytest.mark.parametrize("seed", [5, 6])
def test_half_precision_gradients_stay_close_to_float32_autodiff(seed):
    """bf16 input and cotangent: the gradient (g kept in bf16 between its two passes) against float32 autodiff of
    the plain formula on the same rounded values, within bf16 rounding."""
    x, scale, bias, weights = _inputs(seed, shape=(8, 16, 16, 16))
    x16, w16 = x.astype(jnp.bfloat16), weights[0].astype(jnp.bfloat16)
    got = jax.grad(lambda v, s, b: jnp.sum(batch_norm_silu(v, s, b, EPS)[0].astype(jnp.float32) * w16),
                   argnums=(0, 1, 2))(x16, scale, bias)
    want = jax.grad(lambda v, s, b: jnp.sum(plain(v, s, b)[0] * w16.astype(jnp.float32)),
                    argnums=(0, 1, 2))(x16.astype(jnp.float32), scale, bias)
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w)
        assert np.linalg.norm(g - w) <= 2**-7 * np.linalg.norm(w)


def test_replicated_scale_and_bias_under_shard_map_get_the_summed_gradient():
    """Under shard_map with parameters left replicated (the step's exchange="autodiff"), the gradient of scale and
    bias is the sum over devices, as autodiff gives for the plain formula."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    x, scale, bias, _ = _inputs(4)
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))

    def loss(fn):
        def per_device(x, scale, bias):
            return jax.lax.psum(jnp.sum(fn(x, scale, bias)[0] ** 2), "data")
        mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=P())
        return jax.jit(jax.grad(mapped, argnums=(0, 1, 2)))

    got = loss(lambda x, s, b: batch_norm_silu(x, s, b, EPS))(x, scale, bias)
    want = loss(plain)(x, scale, bias)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (64, 20, 20, 8), (2, 97, 61, 3), (8, 160, 160, 2)])
def test_channel_sums_are_the_plain_sums(shape, two_stage):
    # two stages: one pass for few rows, partials over a power-of-two split for many (2 * 97 * 61 rows: 2 parts)
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape).astype(np.float32)
    b = rng.normal(size=shape).astype(np.float32)
    got = channel_sums(jnp.asarray(a), jnp.asarray(b).astype(jnp.bfloat16), two_stage=two_stage)
    assert got.shape == (2, shape[-1]) and got.dtype == jnp.float32
    want = np.stack([a.astype(np.float64).sum((0, 1, 2)),
                     np.asarray(jnp.asarray(b).astype(jnp.bfloat16), np.float64).sum((0, 1, 2))])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * math.prod(shape[:-1]) ** 0.5)

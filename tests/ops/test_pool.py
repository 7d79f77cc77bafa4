"""max_pool_same: the scatter-free gradient equals autodiff of the plain pool, ties included."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.pool import max_pool_same


def _grads(x, g, window):
    def loss(v, routed):
        pooled = max_pool_same(v, window) if routed else nn.max_pool(
            v, (window, window), strides=(1, 1), padding=((window // 2,) * 2,) * 2)
        return jnp.sum(pooled * g)
    return jax.grad(loss)(x, False), jax.grad(loss)(x, True)


@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_autodiff_on_random_values(window, seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, 9, 11, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 9, 11, 4)), jnp.float32)
    plain, routed = _grads(x, g, window)
    assert np.array_equal(max_pool_same(x, window), nn.max_pool(x, (window, window), strides=(1, 1),
                                                               padding=((window // 2,) * 2,) * 2))
    np.testing.assert_allclose(routed, plain, rtol=1e-6, atol=1e-5)  # summation order


@pytest.mark.parametrize("window", [3, 5])
def test_ties_go_to_the_first_maximum_as_autodiff_does(window):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(0, 3, size=(3, 8, 8, 5)), jnp.float32)  # many equal maxima per window
    g = jnp.asarray(rng.integers(-4, 5, size=(3, 8, 8, 5)), jnp.float32)  # integer sums are exact in any order
    plain, routed = _grads(x, g, window)
    assert np.array_equal(routed, plain)
    assert float(jnp.abs(routed).sum()) > 0


def test_half_precision_gradient_is_the_float32_sum_rounded_once():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 10, 10, 8)), jnp.bfloat16)
    g = jnp.asarray(rng.normal(size=(2, 10, 10, 8)), jnp.bfloat16)
    _, routed = _grads(x, g, 5)
    exact, _ = _grads(x.astype(jnp.float32), g.astype(jnp.float32), 5)
    assert routed.dtype == jnp.bfloat16
    # summed in float32 and rounded once (autodiff's select-and-scatter sums in bfloat16)
    np.testing.assert_allclose(np.asarray(routed, np.float32), exact, rtol=2**-8, atol=1e-6)

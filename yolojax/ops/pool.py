"""Max pooling with 'same' padding and stride 1 (SPPF's pools in training), with a gradient that avoids scatters.

Autodiff of `lax.reduce_window(max)` gives a select-and-scatter, which XLA's GPU backend runs as a scatter, slow for
the few values it moves. The gradient here is the same function written as gathers of shifted views: each window's
winner is the FIRST maximum in row-major order (as torch's max_pool2d and XLA's select-and-scatter choose), and
each input position sums the output gradients of the windows it won. Everything is elementwise over shifted slices,
so XLA fuses it into one loop.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _pool(x, window: int):
    pad = window // 2
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, 1, 1, 1),
                             ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _offsets(window: int):
    return [(dy, dx) for dy in range(window) for dx in range(window)]


def window_winner(x, window: int):
    """Index (row-major, 0 .. window**2 - 1) of the first maximum of each stride-1 'same' window.
    x (b, h, w, c) -> (b, h, w, c) int32; padding never wins (the centre is always inside)."""
    pad = window // 2
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
    best, winner = padded[:, :h, :w], jnp.zeros(x.shape, jnp.int32)  # offset 0 first
    for t, (dy, dx) in enumerate(_offsets(window)[1:], start=1):
        value = padded[:, dy:dy + h, dx:dx + w]
        better = value > best
        best, winner = jnp.where(better, value, best), jnp.where(better, t, winner)
    return winner


def route_gradient(winner, g, window: int):
    """Input gradient of the pool: each input position sums the output gradients `g` of the windows whose winner
    it is. winner, g (b, h, w, c) -> (b, h, w, c) in g's dtype (summed in float32)."""
    pad = window // 2
    _, h, w, _ = g.shape
    spread = 2 * pad
    winner_p = jnp.pad(winner, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-1)
    g_p = jnp.pad(g.astype(jnp.float32), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    total = jnp.zeros(g.shape, jnp.float32)
    for t, (dy, dx) in enumerate(_offsets(window)):
        # input (i, j) sits at offset (dy, dx) of the window centred at (i + pad - dy, j + pad - dx)
        rows, cols = slice(spread - dy, spread - dy + h), slice(spread - dx, spread - dx + w)
        total = total + jnp.where(winner_p[:, rows, cols] == t, g_p[:, rows, cols], 0.0)
    return total.astype(g.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_same(x, window: int):
    """Max pool, stride 1, 'same' padding window // 2 (odd window), with the scatter-free gradient (the values
    autodiff of the plain pool gives). x (b, h, w, c) -> (b, h, w, c)."""
    return _pool(x, window)


def _pool_fwd(x, window):
    return _pool(x, window), x


def _pool_bwd(window, x, g):
    return (route_gradient(window_winner(x, window), g, window),)


max_pool_same.defvjp(_pool_fwd, _pool_bwd)

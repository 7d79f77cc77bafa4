"""Max pooling with 'same' padding and stride 1 (SPPF's pools in training), with a gradient that avoids scatters.

Autodiff of `lax.reduce_window(max)` gives a select-and-scatter, which XLA's GPU backend runs as a scatter, slow for
the few values it moves. The gradient here is the same function written as shifted views: each window's winner is
the FIRST maximum in row-major order (as torch's max_pool2d and XLA's select-and-scatter choose), and each input
position sums the output gradients of the windows it won. The square window is taken as a pass along the width
(within each row), then one along the height (across rows), so each pass compares `window` shifted views, not
window**2; everything is elementwise over shifted slices, which XLA fuses.
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


def first_max_along(x, window: int, axis: int):
    """Stride-1 'same' max over `window` positions along `axis` (1: height, 2: width) and the index (0 .. window-1)
    of its FIRST maximum. x (b, h, w, c) -> (max (b, h, w, c) in x's dtype, index (b, h, w, c) int32). Padding
    never wins: the centre is always inside."""
    pad, size = window // 2, x.shape[axis]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    padded = jnp.pad(x, widths, constant_values=-jnp.inf)
    best, winner = lax.slice_in_dim(padded, 0, size, axis=axis), jnp.zeros(x.shape, jnp.int32)
    for t in range(1, window):
        value = lax.slice_in_dim(padded, t, t + size, axis=axis)
        better = value > best
        best, winner = jnp.where(better, value, best), jnp.where(better, t, winner)
    return best, winner


def route_along(winner, g, window: int, axis: int):
    """Gradient of `first_max_along`: each input position sums the output gradients `g` of the windows (along
    `axis`) whose winner it is. winner (b, h, w, c) integers, g (b, h, w, c) float32 -> (b, h, w, c) float32."""
    pad, size = window // 2, g.shape[axis]
    widths = [(0, 0)] * g.ndim
    widths[axis] = (pad, pad)
    winner_p = jnp.pad(winner, widths, constant_values=-1)
    g_p = jnp.pad(g, widths)
    total = jnp.zeros(g.shape, jnp.float32)
    for t in range(window):
        # input i sits at offset t of the window centred at i + pad - t
        start = 2 * pad - t
        total = total + jnp.where(lax.slice_in_dim(winner_p, start, start + size, axis=axis) == t,
                                  lax.slice_in_dim(g_p, start, start + size, axis=axis), 0.0)
    return total


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_same(x, window: int):
    """Max pool, stride 1, 'same' padding window // 2 (odd window), with the scatter-free gradient (the values
    autodiff of the plain pool gives). x (b, h, w, c) -> (b, h, w, c)."""
    return _pool(x, window)


def _pool_fwd(x, window):
    return _pool(x, window), x


def _pool_bwd(window, x, g):
    # The square window along the width, then the height: the first maximum within each row, then the first row
    # holding the window's maximum, is the first maximum in row-major order. Two 1-D passes of `window` steps each
    # instead of one of window**2; routed in float32 and rounded once.
    row_max, in_row = first_max_along(x, window, axis=2)
    _, row = first_max_along(row_max, window, axis=1)
    # Each route reads its winners at `window` offsets. Left to itself, XLA keeps the comparisons' masks in memory
    # and rebuilds the winner from them at every offset; one byte per winner (windows up to 127), written once, is
    # cheaper.
    index = jnp.int8 if window <= 127 else jnp.int32
    in_row, row = lax.optimization_barrier((in_row.astype(index), row.astype(index)))
    d_row_max = route_along(row, g.astype(jnp.float32), window, axis=1)
    return (route_along(in_row, d_row_max, window, axis=2).astype(g.dtype),)


max_pool_same.defvjp(_pool_fwd, _pool_bwd)

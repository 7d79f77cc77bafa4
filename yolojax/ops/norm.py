"""Training-mode BatchNorm followed by SiLU as one function with a hand-written gradient.

Autodiff of the plain formula (batch moments, normalize, SiLU) gives XLA several reductions and elementwise passes
over each activation, some through float32 intermediates in memory. The gradient written out is one multi-output
reduction (sum of g and of g * x_hat, with g = dL/dy recomputed from the saved input) and one elementwise pass for
dx. XLA keeps g in memory between the two; it is stored in x's dtype (bf16 in mixed precision: one rounding, as
d_out itself has), which halves the bytes of the backward's largest intermediate. Recomputing g in the dx pass
instead measured slower (benchmarks/2026-11-26_speed/README.md). For YOLOv8 most of the step's non-convolution
time is these layers.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _partial_count(rows: int) -> int:
    """How many partial sums `channel_sums` takes over `rows` rows: the largest power of two at most sqrt(rows)
    that divides rows (1 for a few thousand rows or less: one pass suffices)."""
    if rows <= 4096:
        return 1
    parts = 1 << (math.isqrt(rows).bit_length() - 1)
    while rows % parts:
        parts //= 2
    return parts


def channel_sums(*arrays, two_stage: bool | None = None):
    """Per-channel sums over every axis but the last of arrays of one shape (..., c), as one (len(arrays), c)
    array in float32 (at least).

    two_stage (default: on GPUs): in two explicit stages, partial sums over blocks of rows, then their totals. XLA's
    GPU backend splits a long reduction the same way by itself, but finishes each sum with a kernel of its own; with
    the partials stacked, one kernel finishes all of them (for BatchNorm: one instead of two per layer and pass).
    The GPU step is faster for it and its compile longer (benchmarks/2026-11-27_step_kernels/ weighs the two).
    Otherwise one reduction per array: XLA's CPU backend runs the explicit stages slower."""
    if two_stage is None:
        two_stage = jax.default_backend() == "gpu"
    wide = [a.astype(jnp.promote_types(a.dtype, jnp.float32)) for a in arrays]
    c = wide[0].shape[-1]
    rows = math.prod(wide[0].shape[:-1])
    parts = _partial_count(rows) if two_stage else 1
    if parts == 1:
        return jnp.stack([a.reshape(rows, c).sum(0) for a in wide])
    return jnp.stack([a.reshape(parts, rows // parts, c).sum(1) for a in wide]).sum(1)


def batch_moments(x, axis_name: str | None = None):
    """Per-channel mean and biased variance of x (..., c) over every other axis, in float32 (at least), and the
    element count n per channel. axis_name: pool the moments over that mapped axis (n then counts all devices).
    Returns (mean (c,), var (c,), n int)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    count = math.prod(x.shape[:-1])
    moments = channel_sums(x, jnp.square(x)) / count
    if axis_name is not None:
        moments = lax.pmean(moments, axis_name)
        count *= lax.axis_size(axis_name)
    mean, mean_sq = moments[0], moments[1]
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0), count


def batch_norm_silu(x, scale, bias, epsilon: float):
    """SiLU(BatchNorm(x)) with the batch's statistics (training mode).

    x: (..., c) any float dtype; scale, bias: (c,) float32; epsilon: added to the variance.
    Returns (y (..., c) in x's dtype, mean (c,) float32, var (c,) float32 biased batch variance). Computes in
    float32 and rounds once. The gradient (custom) equals autodiff's of the same formula up to rounding.
    Under shard_map, scale and bias may be replicated while x varies over a mesh axis (parameters left to autodiff's
    own cross-device sum): they are cast to varying first, so their gradient is summed over that axis as autodiff
    does for any replicated input.
    """
    missing = _varying_axes(x) - _varying_axes(scale)
    if missing:
        scale, bias = lax.pcast((scale, bias), tuple(sorted(missing)), to="varying")
    return _batch_norm_silu(x, scale, bias, epsilon)


def _varying_axes(x) -> frozenset:
    """The mesh axes over which x varies inside shard_map (empty outside)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; earlier releases call it `vma`
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_silu(x, scale, bias, epsilon: float):
    return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
    x32 = x.astype(jnp.float32)
    mean, var, _ = batch_moments(x32)
    inv_std = lax.rsqrt(var + epsilon)
    # y = x * k + shift: the per-channel k and shift are what both passes read. Reading scale and bias themselves,
    # XLA copied a slice of the flat parameter buffer out for each layer's bias (a kernel each at the step's start).
    k = inv_std * scale
    shift = bias - mean * k
    y = x32 * k + shift
    return (jax.nn.silu(y).astype(x.dtype), mean, var), (x, mean, inv_std, k, shift)


def silu_backward(y, d_out):
    """dL/dy of SiLU(y) from the cotangent d_out of its output: y, d_out (...), any float dtypes -> float32 (...)."""
    sig = jax.nn.sigmoid(y)
    return d_out.astype(jnp.float32) * (sig * (1 + y * (1 - sig)))


def _backward(epsilon, residuals, cotangents):
    x, mean, inv_std, k, shift = residuals
    d_out, d_mean, d_var = cotangents
    n = math.prod(x.shape[:-1])
    x32 = x.astype(jnp.float32)
    x_hat = (x32 - mean) * inv_std
    g = silu_backward(x32 * k + shift, d_out)
    # XLA writes g out between the reduction and the dx pass; stored in x's dtype it costs half the bytes. The
    # barrier keeps that rounding, which XLA would otherwise drop along with the halved traffic.
    g = lax.optimization_barrier(g.astype(x.dtype)).astype(jnp.float32)
    sum_g, sum_g_xhat = channel_sums(g, g * x_hat)
    dx = k * (g - sum_g / n - x_hat * (sum_g_xhat / n))
    # the statistics' own cotangents (zero when they only feed the running averages)
    dx = dx + d_mean / n + d_var * (2.0 / n) * (x32 - mean)
    return dx.astype(x.dtype), sum_g_xhat, sum_g


_batch_norm_silu.defvjp(_forward, _backward)

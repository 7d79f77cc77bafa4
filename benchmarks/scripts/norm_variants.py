"""Formulations of the BatchNorm + SiLU layer tried against the library's (`yolojax.ops.norm`), for
`bench_norm.py --variants`: the backward as XLA kernels in several arrangements (g stored, recomputed, summed in
one or two reductions, through a Pallas kernel, with other forms of SiLU's derivative) and two forward forms. What
each measured is in benchmarks/2026-11-27_norm/README.md.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from yolojax.ops import norm


# Backward formulations tried against the library's (`--variants`); each gets the forward's residuals and the
# cotangent of y alone (the statistics' cotangents are zero here) and returns (dx, d_scale, d_bias).
# x, d_out: (..., c) activations (bf16 in the benchmark); mean, inv_std, scale, bias: (c,) float32.
def _silu_grad_terms(x, mean, inv_std, scale, bias, d_out):
    x_hat = (x.astype(jnp.float32) - mean) * inv_std
    return x_hat, norm.silu_backward(x_hat * scale + bias, d_out)


def _dx(x_hat, g, sums, inv_std, scale, n, dtype):
    sum_g, sum_g_xhat = sums
    return ((scale * inv_std) * (g - sum_g / n - x_hat * (sum_g_xhat / n))).astype(dtype)


def backward_recompute(x, mean, inv_std, scale, bias, d_out):
    """The reduction and the dx pass each compute g from d_out and x (the dx pass's inputs behind a barrier)."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    sums = g.sum(range(x.ndim - 1)), (g * x_hat).sum(range(x.ndim - 1))
    x2, d2 = lax.optimization_barrier((x, d_out))
    x_hat2, g2 = _silu_grad_terms(x2, mean, inv_std, scale, bias, d2)
    return _dx(x_hat2, g2, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_recompute_variadic(x, mean, inv_std, scale, bias, d_out):
    """g computed inside one variadic reduction for both sums, recomputed in the dx pass (inputs behind a barrier).
    XLA still writes g (float32) to memory before the reduction."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    sums = lax.reduce((g, g * x_hat), (jnp.float32(0), jnp.float32(0)),
                      lambda a, b: (a[0] + b[0], a[1] + b[1]), tuple(range(x.ndim - 1)))
    x2, d2 = lax.optimization_barrier((x, d_out))
    x_hat2, g2 = _silu_grad_terms(x2, mean, inv_std, scale, bias, d2)
    return _dx(x_hat2, g2, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_variadic(x, mean, inv_std, scale, bias, d_out):
    """g stored in bf16 behind a barrier (as the library), both sums as one variadic reduction."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    g = lax.optimization_barrier(g.astype(x.dtype)).astype(jnp.float32)
    sums = lax.reduce((g, g * x_hat), (jnp.float32(0), jnp.float32(0)),
                      lambda a, b: (a[0] + b[0], a[1] + b[1]), tuple(range(x.ndim - 1)))
    return _dx(x_hat, g, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def _sum_rows_per_block(rows: int, channels: int, elements: int) -> int:
    """The largest power of 2 dividing rows with at most `elements` per (rows, channels) block."""
    block = 1
    while block * 2 * channels <= elements and rows % (block * 2) == 0:
        block *= 2
    return block


def backward_pallas_sums(elements: int = 8192, warps: int = 4):
    """One Triton kernel reads d_out and x and writes per-block partial sums only (g in registers); XLA's dx pass
    recomputes g from d_out and x, so g never goes to memory. `elements` per program, `warps` per program."""
    def backward(x, mean, inv_std, scale, bias, d_out):
        from jax.experimental import pallas as pl
        from jax.experimental.pallas import triton as plgpu

        c = x.shape[-1]
        if c & (c - 1):
            raise NotImplementedError(f"{c} channels: Pallas's Triton lowering takes power-of-2 block shapes only")
        rows = math.prod(x.shape[:-1])
        block = _sum_rows_per_block(rows, c, elements)
        blocks = rows // block

        def kernel(x_ref, d_ref, mean_ref, inv_ref, scale_ref, bias_ref, sg_ref, sgx_ref):
            x_hat = (x_ref[...].astype(jnp.float32) - mean_ref[...]) * inv_ref[...]
            y = x_hat * scale_ref[...] + bias_ref[...]
            sig = 1.0 / (1.0 + jnp.exp(-y))
            g = d_ref[...].astype(jnp.float32) * (sig * (1.0 + y * (1.0 - sig)))
            sg_ref[...] = jnp.sum(g, axis=0, keepdims=True)
            sgx_ref[...] = jnp.sum(g * x_hat, axis=0, keepdims=True)

        rows_spec = pl.BlockSpec((block, c), lambda i: (i, 0))
        vec_spec = pl.BlockSpec((1, c), lambda i: (0, 0))
        part_spec = pl.BlockSpec((1, c), lambda i: (i, 0))
        part = jax.ShapeDtypeStruct((blocks, c), jnp.float32)
        sg, sgx = pl.pallas_call(
            kernel, grid=(blocks,), in_specs=[rows_spec, rows_spec] + [vec_spec] * 4,
            out_specs=[part_spec, part_spec], out_shape=[part, part],
            compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=1),
            interpret=jax.default_backend() == "cpu")(
            x.reshape(rows, c), d_out.reshape(rows, c), *(v.reshape(1, c) for v in (mean, inv_std, scale, bias)))
        sums = sg.sum(0), sgx.sum(0)
        x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
        return _dx(x_hat, g, sums, inv_std, scale, rows, x.dtype), sums[1], sums[0]
    return backward


def backward_lean(x, mean, inv_std, scale, bias, d_out):
    """As the library, with the per-channel algebra folded into three coefficients made of products alone (no
    division), so XLA can fuse it into the dx pass instead of running small per-channel kernels."""
    inv_n = 1.0 / math.prod(x.shape[:-1])
    axes = tuple(range(x.ndim - 1))
    a = scale * inv_std
    centred = x.astype(jnp.float32) - mean
    g = norm.silu_backward(centred * a + bias, d_out)
    g = lax.optimization_barrier(g.astype(x.dtype)).astype(jnp.float32)
    sum_g, sum_g_centred = g.sum(axes), (g * centred).sum(axes)
    dx = g * a + centred * (a * inv_std * inv_std * sum_g_centred * -inv_n) + a * sum_g * -inv_n
    return dx.astype(x.dtype), inv_std * sum_g_centred, sum_g


def forward_lean(x, scale, bias, epsilon=1e-3):
    """The forward with moments as sums times 1/n and the normalisation as one multiply-add per element."""
    inv_n = 1.0 / math.prod(x.shape[:-1])
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean, mean_sq = x32.sum(axes) * inv_n, jnp.square(x32).sum(axes) * inv_n
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    a = lax.rsqrt(var + epsilon) * scale
    return jax.nn.silu(x32 * a + (bias - mean * a)).astype(x.dtype), mean, var


def forward_two_sums(x, scale, bias, epsilon=1e-3):
    """The forward with the moments as two reductions (means of x and of x^2), each finished by its own kernel."""
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean, mean_sq = x32.mean(axes), jnp.square(x32).mean(axes)
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    y = (x32 - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
    return jax.nn.silu(y).astype(x.dtype), mean, var


def _sums(g, x_hat):
    axes = tuple(range(x_hat.ndim - 1))
    return g.sum(axes), (g * x_hat).sum(axes)


def backward_sums_then_barrier(x, mean, inv_std, scale, bias, d_out):
    """g rounded to x's dtype, the sums taken of the rounded g, and the barrier after both (g and the sums), so that
    XLA may write g from the reduction's own kernel (one pass fewer than the library's)."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    g_low = g.astype(x.dtype)
    sums = _sums(g_low.astype(jnp.float32), x_hat)
    g_low, sums = lax.optimization_barrier((g_low, sums))
    return _dx(x_hat, g_low.astype(jnp.float32), sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_reduce_precision(x, mean, inv_std, scale, bias, d_out):
    """As sums_then_barrier with the rounding as reduce_precision (float32 holding a bf16 value), which XLA's
    excess-precision simplification does not remove; g is stored as the exact bf16 of that value."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    info = jnp.finfo(x.dtype)
    g = lax.reduce_precision(g, exponent_bits=info.nexp, mantissa_bits=info.nmant)
    sums = _sums(g, x_hat)
    g_low, sums = lax.optimization_barrier((g.astype(x.dtype), sums))
    return _dx(x_hat, g_low.astype(jnp.float32), sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_rounded_free(x, mean, inv_std, scale, bias, d_out):
    """g rounded to x's dtype for the sums and the dx pass, no barrier: XLA chooses what to keep in memory."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    g = g.astype(x.dtype).astype(jnp.float32)
    sums = _sums(g, x_hat)
    return _dx(x_hat, g, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_linear_free(x, mean, inv_std, scale, bias, d_out):
    """A probe, not a gradient: rounded_free with g = d_out * y (no sigmoid), to see whether XLA fuses g into the
    reduction when g holds no transcendental."""
    n = math.prod(x.shape[:-1])
    x_hat = (x.astype(jnp.float32) - mean) * inv_std
    g = (d_out.astype(jnp.float32) * (x_hat * scale + bias)).astype(x.dtype).astype(jnp.float32)
    sums = _sums(g, x_hat)
    return _dx(x_hat, g, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def _sigmoid_by_tanh(y):
    return 0.5 + 0.5 * jnp.tanh(0.5 * y)


def _sigmoid_by_exp(y):
    return 1.0 / (1.0 + jnp.exp(-y))


def _sigmoid_by_polynomial(y):
    """1 / (1 + 2^t), t = -y log2(e), with 2^t as 2^round(t) (exponent bits) times a degree-7 Taylor polynomial of
    2^f, |f| <= 1/2 (relative error ~5e-9): no transcendental instruction in the HLO."""
    t = jnp.clip(-y * 1.4426950408889634, -126.0, 126.0)
    whole = jnp.floor(t + 0.5)
    f = (t - whole) * 0.6931471805599453
    p = jnp.float32(1.0)
    for k in range(7, 0, -1):
        p = 1.0 + p * f / k
    power = lax.bitcast_convert_type(lax.shift_left(whole.astype(jnp.int32) + 127, 23), jnp.float32)
    return 1.0 / (1.0 + p * power)


def _backward_with_sigmoid(sigmoid):
    """The backward with g recomputed in the dx pass (no barrier, nothing rounded) and SiLU's derivative from
    `sigmoid`: does XLA fuse g into the reduction when its sigmoid is not a `logistic` instruction?"""
    def backward(x, mean, inv_std, scale, bias, d_out):
        n = math.prod(x.shape[:-1])
        x_hat = (x.astype(jnp.float32) - mean) * inv_std
        y = x_hat * scale + bias
        sig = sigmoid(y)
        g = d_out.astype(jnp.float32) * (sig * (1 + y * (1 - sig)))
        return _dx(x_hat, g, _sums(g, x_hat), inv_std, scale, n, x.dtype), *_sums(g, x_hat)[::-1]
    return backward


def _backward_split_sums(rows_per_partial: int):
    """logistic_free with the sums taken in two explicit stages: partial sums over groups of `rows_per_partial`
    rows ((rows / k, k, c) -> (rows / k, c)), then over the partials. A probe of whether XLA fuses g's sigmoid into a
    reduction with many outputs (it does not into XLA's own first stage of 1,024-2,048 rows)."""
    def backward(x, mean, inv_std, scale, bias, d_out):
        c, n = x.shape[-1], math.prod(x.shape[:-1])
        x_hat = (x.astype(jnp.float32) - mean) * inv_std
        g = norm.silu_backward(x_hat * scale + bias, d_out)
        grouped = lambda a: a.reshape(n // rows_per_partial, rows_per_partial, c)  # noqa: E731
        sum_g = grouped(g).sum(1).sum(0)
        sum_g_xhat = grouped(g * x_hat).sum(1).sum(0)
        return _dx(x_hat, g, (sum_g, sum_g_xhat), inv_std, scale, n, x.dtype), sum_g_xhat, sum_g
    return backward


def _silu_derivative(y, sigmoid):
    sig = sigmoid(y)
    return sig * (1 + y * (1 - sig))


def _backward_one_consumer(sums_form: str, dx_form: str):
    """g's SiLU derivative read by one consumer each: the sums from g = d_out * s'(y) with sigmoid = logistic, the
    dx pass from its own g (`dx_form`: "tanh", the same derivative with sigmoid = 0.5 + 0.5 tanh(y / 2), an
    expression XLA does not merge with the first; "barrier", logistic from the inputs behind a barrier). The sums:
    `sums_form` "complex" (one reduction of g * (1 + i x_hat), reading g once per element), "variadic" (one
    reduction of the pair (g, g x_hat)), "two" (two reductions)."""
    def backward(x, mean, inv_std, scale, bias, d_out):
        n, axes = math.prod(x.shape[:-1]), tuple(range(x.ndim - 1))
        x_hat = (x.astype(jnp.float32) - mean) * inv_std
        g = d_out.astype(jnp.float32) * _silu_derivative(x_hat * scale + bias, jax.nn.sigmoid)
        if sums_form == "complex":
            both = lax.complex(g, g * x_hat).sum(axes)
            sums = jnp.real(both), jnp.imag(both)
        elif sums_form == "variadic":
            sums = lax.reduce((g, g * x_hat), (jnp.float32(0), jnp.float32(0)),
                              lambda a, b: (a[0] + b[0], a[1] + b[1]), axes)
        else:
            sums = _sums(g, x_hat)
        if dx_form == "barrier":
            x2, d2 = lax.optimization_barrier((x, d_out))
            x_hat = (x2.astype(jnp.float32) - mean) * inv_std
            g = d2.astype(jnp.float32) * _silu_derivative(x_hat * scale + bias, jax.nn.sigmoid)
        else:
            g = d_out.astype(jnp.float32) * _silu_derivative(x_hat * scale + bias, _sigmoid_by_tanh)
        return _dx(x_hat, g, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]
    return backward


def backward_g_stored(x, mean, inv_std, scale, bias, d_out):
    """g stored in bf16 behind a barrier between the sums and the dx pass (three passes, 16 bytes per activation)."""
    n = math.prod(x.shape[:-1])
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    g = lax.optimization_barrier(g.astype(x.dtype)).astype(jnp.float32)
    return _dx(x_hat, g, _sums(g, x_hat), inv_std, scale, n, x.dtype), *_sums(g, x_hat)[::-1]


def backward_complex_lean(x, mean, inv_std, scale, bias, d_out):
    """Both sums as one complex reduction (XLA computes g inside it); the dx pass's own g from y written as
    x a + (bias - mean a), an expression XLA does not merge with the first, so no barrier is needed."""
    n, axes = math.prod(x.shape[:-1]), tuple(range(x.ndim - 1))
    x_hat, g = _silu_grad_terms(x, mean, inv_std, scale, bias, d_out)
    both = lax.complex(g, g * x_hat).sum(axes)
    sums = jnp.real(both), jnp.imag(both)
    a = scale * inv_std
    g = norm.silu_backward(x.astype(jnp.float32) * a + (bias - mean * a), d_out)
    return _dx(x_hat, g, sums, inv_std, scale, n, x.dtype), sums[1], sums[0]


def backward_library(x, mean, inv_std, scale, bias, d_out):
    zeros = jnp.zeros_like(mean)
    return norm._backward(1e-3, (x, mean, inv_std, scale, bias), (d_out, zeros, zeros))


VARIANTS = {"library": backward_library, "lean": backward_lean, "recompute": backward_recompute,
            "recompute_variadic": backward_recompute_variadic, "variadic": backward_variadic,
            "pallas_sums": backward_pallas_sums(), "pallas_sums_2k_w4": backward_pallas_sums(2048, 4),
            "pallas_sums_16k_w8": backward_pallas_sums(16384, 8), "sums_then_barrier": backward_sums_then_barrier,
            "reduce_precision": backward_reduce_precision, "rounded_free": backward_rounded_free,
            "linear_free": backward_linear_free, "logistic_free": _backward_with_sigmoid(jax.nn.sigmoid),
            "tanh_free": _backward_with_sigmoid(_sigmoid_by_tanh), "exp_free": _backward_with_sigmoid(_sigmoid_by_exp),
            "polynomial_free": _backward_with_sigmoid(_sigmoid_by_polynomial),
            **{f"split{k}": _backward_split_sums(k) for k in (16, 64, 256, 1024)},
            "g_stored": backward_g_stored, "complex_lean": backward_complex_lean,
            **{f"{sums}_{dx}": _backward_one_consumer(sums, dx) for sums in ("complex", "variadic", "two")
               for dx in ("tanh", "barrier")}}

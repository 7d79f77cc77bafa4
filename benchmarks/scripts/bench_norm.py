"""The train step's BatchNorm + SiLU layers alone (`yolojax.ops.norm.batch_norm_silu`): forward and forward +
backward per activation shape.

    python benchmarks/scripts/bench_norm.py [--scale n] [--batch 64] [--imgsz 640]
    python benchmarks/scripts/bench_norm.py --variants library,recompute_variadic,pallas_sums [--largest N]

The shapes are those of the model's training forward (recorded by tracing it). Each is timed alone (queued calls,
fastest of 3 rounds; a small layer's time is then mostly the launch) and summed over the layers; GB/s counts the
least traffic of each pass (forward: read x twice, write y; backward: read x and dy twice, write g and dx). Writes
`--out` (JSON). `--variants` times other formulations of the backward alone, from the same saved residuals, per
shape, and lists the kernels XLA compiled for each (fusion kinds and result shapes).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from yolojax.bench.timing import queued_ms  # noqa: E402
from yolojax.models import layers  # noqa: E402
from yolojax.ops import norm  # noqa: E402


def layer_shapes(scale: str, batch: int, imgsz: int) -> collections.Counter:
    """Counter of the (shape, dtype) each fused BatchNorm + SiLU layer sees in the model's training forward."""
    from yolojax.models.yolov8 import YOLOv8, init_variables

    model = YOLOv8(scale, 80, dtype=jnp.bfloat16)
    variables = init_variables(model, jax.random.PRNGKey(0), (imgsz, imgsz))
    seen: collections.Counter = collections.Counter()
    original = layers.batch_norm_silu

    def record(x, scale_, bias, epsilon):
        seen[(tuple(x.shape), str(x.dtype))] += 1
        return original(x, scale_, bias, epsilon)

    layers.batch_norm_silu = record
    try:
        images = jax.ShapeDtypeStruct((batch, imgsz, imgsz, 3), jnp.bfloat16)
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, images)
    finally:
        layers.batch_norm_silu = original
    return seen


def time_shape(shape, dtype, steps: int) -> dict:
    """ms of the forward and of forward + backward of one layer of `shape`, with the module's current settings."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, shape, jnp.float32).astype(dtype)
    dy = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float32).astype(dtype)
    c = shape[-1]
    scale, bias = jnp.full((c,), 1.1, jnp.float32), jnp.full((c,), 0.1, jnp.float32)

    forward = jax.jit(lambda x, s, b: norm.batch_norm_silu(x, s, b, 1e-3))

    def both(x, s, b, dy):
        out, vjp = jax.vjp(lambda x, s, b: norm.batch_norm_silu(x, s, b, 1e-3), x, s, b)
        zeros = (jnp.zeros_like(out[1]), jnp.zeros_like(out[2]))
        return out[1], vjp((dy, *zeros))

    both = jax.jit(both)
    return {"forward_ms": queued_ms(lambda: forward(x, scale, bias), jax.block_until_ready, steps),
            "forward_backward_ms": queued_ms(lambda: both(x, scale, bias, dy), jax.block_until_ready, steps)}


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
            **{f"{sums}_{dx}": _backward_one_consumer(sums, dx) for sums in ("complex", "variadic", "two")
               for dx in ("tanh", "barrier")}}


def fusion_summary(compiled_text: str) -> list[str]:
    """The entry computation's kernels: fusion kinds and custom calls, with their result shapes."""
    entry = compiled_text[compiled_text.index("\nENTRY"):]
    found = []
    for line in entry.splitlines():
        call = re.search(r"= (\(.*?\)|\S+) (fusion|custom-call)\(", line)
        if call:
            kind = re.search(r"kind=(\w+)|custom_call_target=\"([^\"]+)\"", line)
            found.append(f"{next(k for k in kind.groups() if k) if kind else call[2]} {call[1]}")
    return found


def time_variants(shape, dtype, steps: int, names: list[str]) -> dict:
    """ms of each backward formulation alone (from saved residuals) and its kernels, for one layer shape."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, shape, jnp.float32).astype(dtype)
    d_out = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float32).astype(dtype)
    c = shape[-1]
    scale, bias = jnp.full((c,), 1.1, jnp.float32), jnp.full((c,), 0.1, jnp.float32)
    _, mean, var = jax.jit(lambda x: norm.batch_norm_silu(x, scale, bias, 1e-3))(x)
    inv_std = lax.rsqrt(var + 1e-3)
    args = (x, mean, inv_std, scale, bias, d_out)
    results, reference = {}, None
    for name, forward in (("forward_library", lambda x: norm.batch_norm_silu(x, scale, bias, 1e-3)),
                          ("forward_lean", lambda x: forward_lean(x, scale, bias)),
                          ("forward_two_sums", lambda x: forward_two_sums(x, scale, bias))):
        fn = jax.jit(forward)
        results[name] = {"ms": queued_ms(lambda: fn(x), jax.block_until_ready, steps),
                         "kernels": fusion_summary(fn.lower(x).compile().as_text())}
    for name in names:
        fn = jax.jit(VARIANTS[name])
        try:
            out = fn(*args)
        except NotImplementedError as error:
            results[name] = {"skipped": str(error)}
            continue
        if reference is None:
            reference = out
        error = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /
                          (float(jnp.max(jnp.abs(b.astype(jnp.float32)))) + 1e-12)) for a, b in zip(out, reference))
        kernels = fusion_summary(fn.lower(*args).compile().as_text())
        results[name] = {"backward_ms": queued_ms(lambda: fn(*args), jax.block_until_ready, steps),
                         "max_rel_error_vs_first": error, "kernels": kernels}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="")
    parser.add_argument("--variants", default="", help="comma list of backward formulations to time per shape "
                        f"instead ({', '.join(VARIANTS)}); the first is the reference for the error column")
    parser.add_argument("--largest", type=int, default=0, help="with --variants: only the N largest shapes")
    args = parser.parse_args()

    shapes = layer_shapes(args.scale, args.batch, args.imgsz)
    activations = sum(count * jnp.prod(jnp.array(shape)).item() for (shape, _), count in shapes.items())
    bytes_each = jnp.dtype(next(iter(shapes))[1]).itemsize
    result = {"device": jax.devices()[0].device_kind, "scale": args.scale, "batch": args.batch, "imgsz": args.imgsz,
              "layers": sum(shapes.values()), "activations": activations,
              "shapes": [{"shape": list(s), "dtype": d, "count": n} for (s, d), n in shapes.items()]}
    print(f"{result['layers']} layers, {activations / 1e9:.3f} G activations, {len(shapes)} shapes")
    if args.variants:
        names = args.variants.split(",")
        chosen = sorted(shapes.items(), key=lambda item: -math.prod(item[0][0]))[:args.largest or None]
        totals = dict.fromkeys(names, 0.0)
        result["variants"] = []
        for (shape, dtype), count in chosen:
            timed = time_variants(shape, dtype, args.steps, names)
            result["variants"].append({"shape": list(shape), "count": count, **timed})
            for name, r in timed.items():
                if name.startswith("forward"):
                    print(f"  {tuple(shape)} x{count} {name}: {r['ms']:.3f} ms, {len(r['kernels'])} kernels: "
                          f"{'; '.join(r['kernels'])}")
                    continue
                if "skipped" in r:
                    print(f"  {tuple(shape)} x{count} {name}: skipped ({r['skipped']})")
                    continue
                totals[name] += count * r["backward_ms"]
                print(f"  {tuple(shape)} x{count} {name}: {r['backward_ms']:.3f} ms, error "
                      f"{r['max_rel_error_vs_first']:.1e}, {len(r['kernels'])} kernels: {'; '.join(r['kernels'])}")
        result["variant_totals_ms"] = totals
        print("backward totals (ms, count-weighted; a skipped shape adds nothing):",
              {k: round(v, 3) for k, v in totals.items()})
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    per_shape = []
    for (shape, dtype), count in shapes.items():
        ms = time_shape(shape, dtype, args.steps)
        per_shape.append({"shape": list(shape), "count": count, **ms})
    fwd = sum(r["count"] * r["forward_ms"] for r in per_shape)
    bwd = sum(r["count"] * r["forward_backward_ms"] for r in per_shape) - fwd
    fwd_gb, bwd_gb = activations * bytes_each * 3 / 1e9, activations * bytes_each * 6 / 1e9
    result.update(forward_ms=fwd, backward_ms=bwd, per_shape=per_shape, forward_gb_per_s=fwd_gb / fwd * 1e3,
                  backward_gb_per_s=bwd_gb / bwd * 1e3)
    print(f"forward {fwd:7.3f} ms ({fwd_gb / fwd * 1e3:6.0f} GB/s)   backward {bwd:7.3f} ms "
          f"({bwd_gb / bwd * 1e3:6.0f} GB/s)")
    for r in per_shape:
        print(f"  {tuple(r['shape'])} x{r['count']}: forward {r['forward_ms']:.3f} ms, forward + backward "
              f"{r['forward_backward_ms']:.3f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

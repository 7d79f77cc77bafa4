"""The train step's convolution weight gradients alone: cuDNN's (autodiff of `lax.conv_general_dilated`) against the
same gradient written as matrix products over shifted views of the input.

    python benchmarks/scripts/bench_wgrad.py [--scale n] [--batch 64] [--imgsz 640] [--variants library,taps,im2col]

The shapes are those of the model's training forward (recorded by tracing it), k x k kernels with k > 1 only (XLA
already runs 1x1 convolutions as GEMMs). Variants, each from the same input x (b, h, w, c_in) and output gradient
dy (b, h/s, w/s, c_out), bf16 in, float32 accumulation, (k, k, c_in, c_out) out:
  library  the vjp of the convolution with respect to its kernel (cuDNN's weight-gradient kernel)
  taps     one (c_in, c_out) product per kernel tap: the tap's strided view of the padded input against dy,
           contracted over (b, h, w)
  im2col   the taps' views concatenated along channels, one (k * k * c_in, c_out) product
Each is timed alone (queued calls, fastest of 3 rounds) and summed over the layers, with its largest difference
from `library` relative to the gradient's largest magnitude. Writes `--out` (JSON).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from yolojax.bench.timing import queued_ms  # noqa: E402
from yolojax.models import layers  # noqa: E402


def conv_shapes(scale: str, batch: int, imgsz: int) -> collections.Counter:
    """Counter of (x shape, kernel shape, stride) of every k x k (k > 1) convolution in the training forward, as
    cuDNN receives it (after the stem's space-to-depth rewrite)."""
    from yolojax.models.yolov8 import YOLOv8, init_variables

    model = YOLOv8(scale, 80, dtype=jnp.bfloat16)
    variables = init_variables(model, jax.random.PRNGKey(0), (imgsz, imgsz))
    seen: collections.Counter = collections.Counter()
    original = lax.conv_general_dilated

    def record(x, kernel, strides, padding, **kwargs):
        numbers = kwargs.get("dimension_numbers")
        hwio = kernel if numbers is None or numbers[1] == "HWIO" else kernel.transpose(1, 2, 3, 0)
        if hwio.shape[0] > 1:
            seen[(tuple(x.shape), tuple(hwio.shape), int(strides[0]), tuple(map(tuple, padding)))] += 1
        return original(x, kernel, strides, padding, **kwargs)

    layers.lax.conv_general_dilated = record
    try:
        images = jax.ShapeDtypeStruct((batch, imgsz, imgsz, 3), jnp.bfloat16)
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, images)
    finally:
        layers.lax.conv_general_dilated = original
    return seen


def wgrad_library(x, dy, kernel_shape, stride, padding):
    def conv(kernel):
        return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _, pullback = jax.vjp(conv, jnp.zeros(kernel_shape, x.dtype))
    return pullback(dy)[0].astype(jnp.float32)


def _tap_views(x, dy, kernel_shape, stride, padding):
    """The k * k strided views of the padded input, each (b, h_out, w_out, c_in), in (row, column) tap order."""
    k = kernel_shape[0]
    padded = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    _, h_out, w_out, _ = dy.shape
    return [lax.slice(padded, (0, i, j, 0), (x.shape[0], i + stride * (h_out - 1) + 1, j + stride * (w_out - 1) + 1,
                                              x.shape[3]), (1, stride, stride, 1))
            for i in range(k) for j in range(k)]


def _contract(a, dy):
    return lax.dot_general(a, dy, (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=jnp.float32)


def wgrad_taps(x, dy, kernel_shape, stride, padding):
    per_tap = [_contract(view, dy) for view in _tap_views(x, dy, kernel_shape, stride, padding)]
    return jnp.stack(per_tap).reshape(kernel_shape)


def wgrad_im2col(x, dy, kernel_shape, stride, padding):
    patches = jnp.concatenate(_tap_views(x, dy, kernel_shape, stride, padding), axis=-1)
    return _contract(patches, dy).reshape(kernel_shape)


VARIANTS = {"library": wgrad_library, "taps": wgrad_taps, "im2col": wgrad_im2col}


def time_shape(x_shape, kernel_shape, stride, padding, names, steps: int) -> dict:
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, x_shape, jnp.float32).astype(jnp.bfloat16)
    out_shape = jax.eval_shape(lambda a: lax.conv_general_dilated(
        a, jnp.zeros(kernel_shape, a.dtype), (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")), x)
    dy = jax.random.normal(jax.random.fold_in(key, 1), out_shape.shape, jnp.float32).astype(jnp.bfloat16)
    row: dict = {}
    reference = None
    for name in names:
        fn = jax.jit(lambda a, g, f=VARIANTS[name]: f(a, g, kernel_shape, stride, padding))
        result = fn(x, dy)
        if reference is None:
            reference = result
        scale = float(jnp.max(jnp.abs(reference))) or 1.0
        row[name] = {"ms": queued_ms(lambda: fn(x, dy), jax.block_until_ready, steps),
                     "max_rel_diff": float(jnp.max(jnp.abs(result - reference))) / scale}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--variants", default="library,taps,im2col")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    names = args.variants.split(",")
    if names[0] != "library":
        names.insert(0, "library")
    rows, totals = [], collections.Counter()
    for (x_shape, kernel_shape, stride, padding), count in sorted(conv_shapes(args.scale, args.batch,
                                                                              args.imgsz).items()):
        timed = time_shape(x_shape, kernel_shape, stride, padding, names, args.steps)
        for name in names:
            totals[name] += count * timed[name]["ms"]
        rows.append({"x": x_shape, "kernel": kernel_shape, "stride": stride, "count": count, **timed})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"device": jax.devices()[0].device_kind, "scale": args.scale, "batch": args.batch,
               "imgsz": args.imgsz, "total_ms": dict(totals), "layers": rows}
    print(json.dumps(summary["total_ms"]))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""The train step's convolution weight gradients alone: cuDNN's (autodiff of `lax.conv_general_dilated`) against the
same gradient written as matrix products over shifted views of the input.

    python benchmarks/scripts/bench_wgrad.py [--scale n] [--batch 64] [--imgsz 640] [--variants library,taps,im2col]
    python benchmarks/scripts/bench_wgrad.py --blocks 32

The shapes are those of the model's training forward (recorded by tracing it), k x k kernels with k > 1 only (XLA
already runs 1x1 convolutions as GEMMs). Variants, each from the same input x (b, h, w, c_in) and output gradient
dy (b, h/s, w/s, c_out), bf16 in, float32 accumulation, (k, k, c_in, c_out) out:
  library  the vjp of the convolution with respect to its kernel (cuDNN's weight-gradient kernel)
  taps     one (c_in, c_out) product per kernel tap: the tap's strided view of the padded input against dy,
           contracted over (b, h, w)
  im2col   the taps' views concatenated along channels, one (k * k * c_in, c_out) product
Each is timed alone (queued calls, fastest of 3 rounds) and summed over the layers, with its largest difference
from `library` relative to the gradient's largest magnitude. Writes `--out` (JSON).

The layers are recorded as the library runs them (its narrow layers over pixel blocks, see `yolojax.models.layers`).
`--blocks C` times instead the model's 3x3 stride-1 convolutions of at most C input channels as they are on pixels,
forward and forward + both gradients, on pixels and on 2x2 pixel blocks (`yolojax.models.layers`'
`to_pixel_blocks` and `conv3x3_on_pixel_blocks`: the kernel over blocks, 4c inputs and outputs, built from the 3x3
one in the timed program), the input already in blocks.
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


def conv_shapes(scale: str, batch: int, imgsz: int, pixels: bool = False) -> collections.Counter:
    """Counter of (x shape, kernel shape, stride) of every k x k (k > 1) convolution in the training forward, as
    cuDNN receives it (after the library's pixel-block rewrites; pixels=True: with none but the 3-channel stem's)."""
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
    max_channels = layers.BLOCKS_MAX_CHANNELS
    layers.BLOCKS_MAX_CHANNELS = 0 if pixels else max_channels
    try:
        images = jax.ShapeDtypeStruct((batch, imgsz, imgsz, 3), jnp.bfloat16)
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, images)
    finally:
        layers.lax.conv_general_dilated = original
        layers.BLOCKS_MAX_CHANNELS = max_channels
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


def time_blocks(x_shape, kernel_shape, steps: int) -> dict:
    """ms of a 3x3 stride-1 convolution's forward and of forward + both gradients, on pixels and on 2x2 blocks (the
    input already in block layout, as a stage kept in it would have it), and their largest difference."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, x_shape, jnp.float32).astype(jnp.bfloat16)
    kernel = (jax.random.normal(jax.random.fold_in(key, 2), kernel_shape, jnp.float32) * 0.1).astype(jnp.bfloat16)
    dy = jax.random.normal(jax.random.fold_in(key, 1), x_shape[:3] + kernel_shape[3:], jnp.float32)
    dy = dy.astype(jnp.bfloat16)
    row: dict = {}
    to_blocks = layers.to_pixel_blocks
    for name, conv, inputs, grad in (("pixels", layers.conv2d_same, x, dy),
                                     ("blocks", layers.conv3x3_on_pixel_blocks, to_blocks(x), to_blocks(dy))):
        forward = jax.jit(conv)

        def both(a, k, g, conv=conv):
            out, pullback = jax.vjp(conv, a, k)
            return out, pullback(g)

        both = jax.jit(both)
        row[name] = {"forward_ms": queued_ms(lambda: forward(inputs, kernel), jax.block_until_ready, steps),
                     "forward_backward_ms": queued_ms(lambda: both(inputs, kernel, grad), jax.block_until_ready,
                                                      steps)}
        row[name]["_result"] = both(inputs, kernel, grad)
    (out_p, (dx_p, dk_p)), (out_b, (dx_b, dk_b)) = row["pixels"].pop("_result"), row["blocks"].pop("_result")
    relative = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))) / max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32)))), 1e-30)
    row["max_rel_diff"] = {"out": relative(to_blocks(out_p), out_b), "dx": relative(to_blocks(dx_p), dx_b),
                           "dkernel": relative(dk_p, dk_b)}
    return row


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
    parser.add_argument("--blocks", type=int, default=0, metavar="C",
                        help="instead: 3x3 stride-1 convolutions of <= C input channels on pixels and on 2x2 blocks")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.blocks:
        main_blocks(args)
        return
    names = args.variants.split(",")
    if names[0] != "library":
        names.insert(0, "library")
    run_layers(args, lambda kernel_shape, stride: True,
               lambda x_shape, kernel_shape, stride, padding: time_shape(x_shape, kernel_shape, stride, padding,
                                                                         names, args.steps),
               {name: "ms" for name in names}, "total_ms")


def main_blocks(args) -> None:
    run_layers(args, lambda kernel_shape, stride: kernel_shape[:2] == (3, 3) and stride == 1
               and kernel_shape[2] <= args.blocks,
               lambda x_shape, kernel_shape, stride, padding: time_blocks(x_shape, kernel_shape, args.steps),
               {"pixels": "forward_backward_ms", "blocks": "forward_backward_ms"}, "forward_backward_total_ms")


def run_layers(args, wanted, time_layer, summed: dict, total_key: str) -> None:
    """Time every recorded layer that `wanted(kernel_shape, stride)` keeps, print a JSON line each, sum
    `row[name][summed[name]]` over the layers (times their count) and write `--out`."""
    rows, totals = [], collections.Counter()
    shapes = conv_shapes(args.scale, args.batch, args.imgsz, pixels=bool(args.blocks))
    for (x_shape, kernel_shape, stride, padding), count in sorted(shapes.items()):
        if not wanted(kernel_shape, stride):
            continue
        timed = time_layer(x_shape, kernel_shape, stride, padding)
        for name, field in summed.items():
            totals[name] += count * timed[name][field]
        rows.append({"x": x_shape, "kernel": kernel_shape, "stride": stride, "count": count, **timed})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"device": jax.devices()[0].device_kind, "scale": args.scale, "batch": args.batch,
               "imgsz": args.imgsz, total_key: dict(totals), "layers": rows}
    print(json.dumps(summary[total_key]))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

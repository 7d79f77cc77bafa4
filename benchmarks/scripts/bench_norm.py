"""The train step's BatchNorm + SiLU layers alone (`yolojax.ops.norm.batch_norm_silu`): forward and forward +
backward per activation shape.

    python benchmarks/scripts/bench_norm.py [--scale n] [--batch 64] [--imgsz 640]

The shapes are those of the model's training forward (recorded by tracing it). Each is timed alone (queued calls,
fastest of 3 rounds; a small layer's time is then mostly the launch) and summed over the layers; GB/s counts the
least traffic of each pass (forward: read x twice, write y; backward: read x and dy twice, write g and dx). Writes
`--out` (JSON).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    shapes = layer_shapes(args.scale, args.batch, args.imgsz)
    activations = sum(count * jnp.prod(jnp.array(shape)).item() for (shape, _), count in shapes.items())
    bytes_each = jnp.dtype(next(iter(shapes))[1]).itemsize
    result = {"device": jax.devices()[0].device_kind, "scale": args.scale, "batch": args.batch, "imgsz": args.imgsz,
              "layers": sum(shapes.values()), "activations": activations,
              "shapes": [{"shape": list(s), "dtype": d, "count": n} for (s, d), n in shapes.items()]}
    print(f"{result['layers']} layers, {activations / 1e9:.3f} G activations, {len(shapes)} shapes")
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

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
from norm_variants import VARIANTS, forward_lean, forward_two_sums  # noqa: E402

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

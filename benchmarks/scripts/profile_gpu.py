"""Where the GPU time goes: a device trace of batch-1 inference or of the training step, summarised per kernel.

    python benchmarks/scripts/profile_gpu.py infer [--batch 1]     # YOLOv8 forward + NMS (predict settings)
    python benchmarks/scripts/profile_gpu.py train [--batch 64]                # the full train step (bench_train's)

Each run traces `--calls` calls with `jax.profiler.trace(create_perfetto_trace=True)` and reads the Perfetto JSON
back: per call, the wall time, the number of GPU kernels / copies, the time the GPU was busy (union of its
intervals) and the top kernels by total time. XLA flags come from the environment (XLA_FLAGS), so flag variants are
separate runs. Writes `--out` (JSON) and prints a short table.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yolojax.bench.timing import median_ms  # noqa: E402
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402


def device_events_by_device(trace_dir: str) -> dict[str, list[dict]]:
    """Complete ('X') events of each device (GPU) process in the Perfetto trace under `trace_dir`, by device name."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for e in events:
        name = names.get(e.get("pid"), "")
        if e.get("ph") == "X" and e.get("dur") is not None and "/device:" in name and "CPU" not in name:
            out[name].append(e)
    return dict(out)


def device_events(trace_dir: str) -> list[dict]:
    """Complete ('X') events of every device (GPU) process in the Perfetto trace under `trace_dir`."""
    return [e for events in device_events_by_device(trace_dir).values() for e in events]


def busy_us(events: list[dict]) -> float:
    """Length of the union of the events' [ts, ts + dur) intervals, microseconds."""
    total, end = 0.0, -float("inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def summarise(events: list[dict], calls: int, wall_ms: float, top: int = 25) -> dict:
    """Per-call kernel count, busy time and the top kernels (name, calls per step, ms per step)."""
    per_name = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        per_name[e["name"]][0] += 1
        per_name[e["name"]][1] += e["dur"]
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])
    span_us = (max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)) if events else 0.0
    return {
        "calls_traced": calls, "wall_ms_per_call": wall_ms,
        "device_events_per_call": len(events) / calls,
        "device_busy_ms_per_call": busy_us(events) / calls / 1e3,
        "device_span_ms_per_call": span_us / calls / 1e3,
        "kernel_sum_ms_per_call": sum(v[1] for v in per_name.values()) / calls / 1e3,
        "top": [{"name": name[:160], "count_per_call": n / calls, "ms_per_call": us / calls / 1e3}
                for name, (n, us) in ranked[:top]],
    }


def trace(fn, sync, calls: int) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                sync(fn())
        wall_ms = (time.perf_counter() - start) / calls * 1e3
        return device_events(tmp), wall_ms


def profile_infer(args) -> dict:
    from yolojax.detectors.postprocess import non_max_suppression
    from yolojax.models.yolov8 import YOLOv8, init_variables

    model = YOLOv8(args.scale, 80, dtype=jnp.bfloat16)
    variables = jax.device_put(init_variables(model, jax.random.PRNGKey(0), (args.imgsz, args.imgsz)))
    rng = np.random.default_rng(0)
    x = jax.device_put(jnp.asarray(rng.random((args.batch, args.imgsz, args.imgsz, 3)), jnp.bfloat16))

    @jax.jit
    def detect(v, images):
        boxes_xywh, class_probs = model.apply(v, images, train=False)
        # a random model scores ~1e-4; conf 0 + max_det keeps NMS busy the way a trained model's output does
        return non_max_suppression(boxes_xywh, class_probs, conf_thres=args.conf, iou_thres=0.7, max_det=300)

    @jax.jit
    def forward(v, images):
        return model.apply(v, images, train=False)

    start = time.perf_counter()
    jax.block_until_ready(detect(variables, x))
    compile_s = time.perf_counter() - start
    out = {"what": "infer", "batch": args.batch, "imgsz": args.imgsz, "compile_s": compile_s,
           "forward_ms": median_ms(lambda: forward(variables, x), jax.block_until_ready, 200, 20),
           "detect_ms": median_ms(lambda: detect(variables, x), jax.block_until_ready, 200, 20)}
    events, wall = trace(lambda: detect(variables, x), jax.block_until_ready, args.calls)
    return {**out, **summarise(events, args.calls, wall)}


def profile_train(args) -> dict:
    from yolojax.bench.train_step import SteppedState, padded_targets, sgd_plan
    from yolojax.detectors import YOLOv8Task
    from yolojax.train.optim import hyper_at
    from yolojax.train.setup import build_training
    from yolojax.train.step import replicate, shard_batch

    task = YOLOv8Task(scale=args.scale, num_classes=80, dtype=jnp.bfloat16)
    plan = sgd_plan(args.batch)
    run = build_training(task, plan, (args.imgsz, args.imgsz))
    mesh, state = run.mesh, run.state
    hyper = replicate(hyper_at(plan, 10_000, 10), mesh)
    rng = np.random.default_rng(0)
    cls, bboxes, mask = padded_targets(rng, args.batch, 8, 16, 80)
    images = rng.integers(0, 256, size=(args.batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
    data = shard_batch({"images": images, "bboxes": bboxes, "cls": cls, "mask": mask}, mesh)
    stepped = SteppedState(run.step, state, data, hyper)
    one, compile_s = stepped.one, stepped.compile_s

    ms = median_ms(one, jax.block_until_ready, 20, 5)
    events, wall = trace(one, jax.block_until_ready, args.calls)
    return {"what": "train", "scale": args.scale, "batch": args.batch, "imgsz": args.imgsz, "compile_s": compile_s,
            "ms_per_step": ms, **summarise(events, args.calls, wall, top=40)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["infer", "train"])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=None, help="default: 1 for infer, 64 for train")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.0)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tag", default="", help="label of this variant (e.g. the XLA flags)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    apply_default_xla_flags(job=args.what)  # JAX's backends start at the first computation, after this
    args.batch = args.batch or (1 if args.what == "infer" else 64)
    result = profile_infer(args) if args.what == "infer" else profile_train(args)
    result.update(tag=args.tag, xla_flags=os.environ.get("XLA_FLAGS", ""), device=jax.devices()[0].device_kind)
    brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k != "top"}
    print(json.dumps(brief))
    for row in result["top"][:15]:
        print(f"  {row['ms_per_call']:8.3f} ms  x{row['count_per_call']:6.1f}  {row['name'][:110]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel scaling of the train step: the same per-device batch on 1 and on N devices, each way of exchanging
results between devices (`yolojax.train.step`'s `exchange`), with a device trace per variant.

    python3 benchmarks/scripts/bench_scaling.py --scales n,s --devices 1,2 --out scaling.json  # the GPU host
    python3 benchmarks/scripts/bench_scaling.py --small                              # CPU smoke (4 forced devices)
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i CUDA_VISIBLE_DEVICES=$i \
      python3 benchmarks/scripts/bench_scaling.py ...                  # one process per GPU (i = 0, 1), all GPUs

Per variant: ms/step (steps queued back to back, as the train loop runs them; also the median with a wait after
each step), the host time to dispatch one step into idle devices, img/s, compile s, the all-reduce ops in the
compiled program, and from a trace of `--calls` steps, per device: the time its GPU was busy, the time in NCCL
kernels, and the idle time inside the step (span minus busy); the host's longest events. Efficiency = img/s on N
devices / (N x img/s on one). The "none" exchange (no all-reduce at all, wrong for training) bounds what the
exchange costs: all-reduce share = 1 - ms(none) / ms(flat).
GPU-resident random data as in `yolojax bench`; the XLA flags are the train job's (yolojax.xla_flags).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402

if "--small" in sys.argv:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
apply_default_xla_flags(job="train", deterministic="--deterministic" in sys.argv)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from profile_gpu import busy_us, device_events_by_device, host_summary  # noqa: E402

from yolojax.bench.timing import dispatch_ms, median_ms, queued_ms  # noqa: E402
from yolojax.bench.train_step import SteppedState, padded_targets, sgd_plan  # noqa: E402
from yolojax.detectors import YOLOv8Task  # noqa: E402
from yolojax.train.distributed import maybe_initialize_distributed  # noqa: E402
from yolojax.train.optim import hyper_at  # noqa: E402
from yolojax.train.setup import build_training  # noqa: E402
from yolojax.train.step import make_mesh, replicate, shard_batch  # noqa: E402


def per_device_trace(trace_dir: str, calls: int) -> list[dict]:
    """From the Perfetto trace under `trace_dir`: per GPU, ms per step busy, in NCCL kernels, idle inside the span."""
    out = []
    for name, evs in sorted(device_events_by_device(trace_dir).items()):
        span = max(e["ts"] + e["dur"] for e in evs) - min(e["ts"] for e in evs)
        busy = busy_us(evs)
        nccl = [e for e in evs if "nccl" in e["name"].lower()]
        out.append({"device": name, "busy_ms": busy / calls / 1e3, "idle_in_span_ms": (span - busy) / calls / 1e3,
                    "nccl_ms": sum(e["dur"] for e in nccl) / calls / 1e3, "nccl_kernels": len(nccl) / calls,
                    "kernels": len(evs) / calls})
    return out


def all_reduce_ops(hlo_text: str) -> int:
    return len(re.findall(r"\sall-reduce(?:-start)?\(", hlo_text))


def measure(scale: str, devices: list, exchange: str, args) -> dict:
    """One variant: `args.per_device` images on each of `devices`."""
    dtype = jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    task = YOLOv8Task(scale=scale, num_classes=80, dtype=dtype)
    batch = args.per_device * len(devices)
    plan = sgd_plan(batch)
    run = build_training(task, plan, (args.imgsz, args.imgsz), mesh=make_mesh(devices), exchange=exchange)
    mesh, state = run.mesh, run.state
    hyper = replicate(hyper_at(plan, 10_000, 10), mesh)
    rng = np.random.default_rng(0)
    cls, bboxes, mask = padded_targets(rng, batch, 8, 16, 80)
    images = rng.integers(0, 256, size=(batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
    rows = batch // jax.process_count()  # every process draws the same global batch and keeps its own rows
    local = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    data = shard_batch({"images": images[local], "bboxes": bboxes[local], "cls": cls[local], "mask": mask[local]},
                       mesh)
    stepped = SteppedState(run.step, state, data, hyper)
    one, compiled, compile_s = stepped.one, stepped.compiled, stepped.compile_s

    synced = median_ms(one, jax.block_until_ready, args.steps, 5)
    ms = queued_ms(one, jax.block_until_ready, args.steps)
    dispatch = dispatch_ms(one, jax.block_until_ready)
    row = {"scale": scale, "devices": len(devices), "processes": jax.process_count(), "exchange": exchange,
           "batch": batch, "imgsz": args.imgsz,
           "ms_per_step": ms, "img_per_s": batch / ms * 1e3, "ms_per_step_synced": synced,
           "dispatch_ms": dispatch, "compile_s": compile_s,
           "all_reduce_ops": all_reduce_ops(compiled.as_text()),
           "loss_finite": bool(one()["finite"]), "device_kind": devices[0].device_kind}
    if args.calls and jax.default_backend() == "gpu":
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp, create_perfetto_trace=True):
                for _ in range(args.calls):
                    jax.block_until_ready(one())
            row["trace"] = per_device_trace(tmp, args.calls)
            row["host_top"] = host_summary(tmp, args.calls, top=8)
    stepped.state = None  # the state's device buffers go before the next variant allocates its own
    gc.collect()
    return row


def variants(device_counts: list[int], exchanges: list[str]) -> list[tuple[int, str]]:
    out = []
    for k in device_counts:
        out += [(k, "flat")] if k == 1 else [(k, e) for e in exchanges]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="n")
    parser.add_argument("--devices", default=None, help="comma list of device counts (default: 1 and all)")
    parser.add_argument("--exchanges", default="flat,autodiff,none", help="for the multi-device variants")
    parser.add_argument("--per-device", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5, help="steps traced per variant (0: no trace)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels (train default)")
    parser.add_argument("--small", action="store_true", help="CPU smoke: 4 devices, 64 px, 2 per device")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    maybe_initialize_distributed()  # one process per GPU when launched as a jax.distributed job
    if args.small:
        args.per_device, args.imgsz, args.steps, args.calls = 2, 64, 2, 0
    all_devices = jax.devices()
    counts = [int(c) for c in args.devices.split(",")] if args.devices else sorted({1, len(all_devices)})
    if jax.process_count() > 1:  # a mesh must hold devices of every process
        counts = [len(all_devices)]
    main = jax.process_index() == 0
    rows = []
    for scale in args.scales.split(","):
        single = None
        for k, exchange in variants(counts, args.exchanges.split(",")):
            row = measure(scale, all_devices[:k], exchange, args)
            row["xla_flags"] = os.environ.get("XLA_FLAGS", "")
            if k == 1:
                single = row
            elif single is not None:
                row["efficiency"] = row["img_per_s"] / (k * single["img_per_s"])
            rows.append(row)
            if not main:
                continue
            print(json.dumps({k: v for k, v in row.items() if k not in ("trace", "xla_flags", "host_top")}), flush=True)
            for device in row.get("trace", []):
                print("   ", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in device.items()}))
            for event in row.get("host_top", [])[:5]:
                print("    host", json.dumps(event))
    if args.out and main:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

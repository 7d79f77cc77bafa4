"""The train loop itself (`yolojax.train.loop.train`), fed by the real grain pipeline, against the same compiled step
on one device-resident batch: is training input-bound?

Every call of the jitted step is time-stamped. Per epoch, the steady ms/step is the mean interval between calls from
the 4th call on (the prefetch queue is full by then); the epoch gap is the time from an epoch's last call to the next
epoch's first (worker processes starting, the end-of-epoch work). After training, the same compiled step runs on the
last batch, resident on the device: that is the GPU-bound ms/step. Validation is replaced by a no-op, and nothing
is saved.

    python benchmarks/scripts/bench_loop.py --small                       # CPU smoke: 128 px, batch 4
    python benchmarks/scripts/bench_loop.py --images 3200 --epochs 4       # the GPU host
    python benchmarks/scripts/bench_loop.py --feed-only none,shard,per_device  # the feed alone, no step
Writes benchmarks/loop.json.

`--feed-only` runs no step: it draws the train batches as the loop does (same Prefetch threads and depth) and only
moves them to the devices, one copy function per named variant: `none` (host pipeline alone), `shard` (the loop's
`shard_batch`), `per_device` (each device's rows copied by a thread of its own, then assembled). Reports img/s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_data import AUG, write_images  # noqa: E402

import yolojax.train.loop as loop  # noqa: E402
from yolojax.bench.timing import queued_ms  # noqa: E402
from yolojax.train.config import load_config  # noqa: E402
from yolojax.train.feed import PipelineData, Prefetch  # noqa: E402
from yolojax.train.step import TRAIN_KEYS, WARP_PREFIX, make_mesh, shard_batch  # noqa: E402


class StepClock:
    """Wraps `build_train_step` so that each call of the step is time-stamped and the last call's inputs kept."""

    def __init__(self):
        self.calls: list[float] = []
        self.step = None
        self.last = None

    def build(self, build_train_step):
        def build_timed(*args, **kwargs):
            self.step = build_train_step(*args, **kwargs)

            def timed(state, batch, hyper):
                self.calls.append(time.perf_counter())
                state, metrics = self.step(state, batch, hyper)
                self.last = (state, batch, hyper)
                return state, metrics
            return timed
        return build_timed

    def resident_ms(self, steps: int, repeats: int = 3) -> float:
        """ms per step of the same compiled step on the last batch, resident on the device: the fastest of
        `repeats` runs of `steps` steps (the host is quiet by then, but not always at once)."""
        held = list(self.last)  # the step is compiled already: call it, do not lower it again

        def one():
            held[0], metrics = self.step(*held)
            return metrics

        return queued_ms(one, jax.block_until_ready, steps, rounds=repeats)


def gc_pauses() -> dict:
    """Counts full (generation 2) garbage collections and their total pause, from now on."""
    import gc

    tally = {"count": 0, "seconds": 0.0, "start": None}

    def callback(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            tally["start"] = time.perf_counter()
        elif tally["start"] is not None:
            tally["count"] += 1
            tally["seconds"] += time.perf_counter() - tally["start"]
    gc.callbacks.append(callback)
    return tally


def epoch_summary(calls: list[float], per_epoch: int, skip: int = 3) -> list[dict]:
    """Per epoch: steady ms/step (mean call interval after `skip` calls) and the gap before the next epoch, ms."""
    rows = []
    for e in range(len(calls) // per_epoch):
        t = calls[e * per_epoch:(e + 1) * per_epoch]
        intervals = np.diff(t[skip:]) * 1e3
        row = {"epoch": e, "steady_ms_per_step": (t[-1] - t[skip]) / (len(t) - 1 - skip) * 1e3,
               "interval_ms_p10_p50_p90_max": [float(np.percentile(intervals, q)) for q in (10, 50, 90, 100)],
               "slowest_step": skip + 1 + int(np.argmax(intervals))}
        if (e + 1) * per_epoch < len(calls):
            row["gap_ms"] = (calls[(e + 1) * per_epoch] - t[-1]) * 1e3
        rows.append(row)
    return rows


def summary_line(row: dict, name: str) -> str:
    """One line: name, resident ms, steady ms per epoch, interval p10/p50/p90/max per epoch, gaps, busy share."""
    e = row["epochs_detail"]
    steady = [round(x["steady_ms_per_step"], 1) for x in e]
    intervals = [[round(v, 1) for v in x["interval_ms_p10_p50_p90_max"]] for x in e]
    gaps = [round(x["gap_ms"]) for x in e if "gap_ms" in x]
    busy = row["busy_share_after_epoch1_with_gaps"]
    return (f"{name} resident {row['resident_ms_per_step']:.1f} steady {steady} intervals {intervals} gaps {gaps} "
            f"busy {busy if busy is None else round(busy, 3)}")


def copy_functions(mesh) -> dict:
    """Feed variants: batch (numpy dict) -> what the step would receive, ready on the devices."""
    from concurrent.futures import ThreadPoolExecutor

    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = list(mesh.local_devices)
    pool = ThreadPoolExecutor(len(devices))
    sharding = NamedSharding(mesh, P(mesh.axis_names[0]))

    def per_device(batch):
        out = {}
        for key, local in batch.items():
            if key not in TRAIN_KEYS and not key.startswith(WARP_PREFIX):
                continue
            parts = np.split(np.asarray(local), len(devices))
            shards = list(pool.map(jax.device_put, parts, devices))
            out[key] = jax.make_array_from_single_device_arrays((local.shape[0] * jax.process_count(),)
                                                                + local.shape[1:], sharding, shards)
        return jax.block_until_ready(out)

    return {"none": lambda batch: batch,
            "shard": lambda batch: jax.block_until_ready(shard_batch(batch, mesh)),
            "per_device": per_device}


def feed_only(cfg, variants: list[str], batches: int) -> list[dict]:
    """img/s of drawing `batches` train batches and copying them to the devices, per copy variant."""
    data, mesh = PipelineData(cfg), make_mesh()
    copies, rows = copy_functions(mesh), []
    try:
        for name in variants:
            for epoch in range(2):  # the first epoch starts the workers; the second is timed
                stamps = []
                with Prefetch(data.train_epoch(epoch, mosaic=True), depth=loop.PREFETCH_DEPTH,
                              prepare=copies[name], threads=loop.COPY_THREADS) as items:
                    for k, _ in enumerate(items):
                        stamps.append(time.perf_counter())
                        if k + 1 >= batches:
                            break
            per_batch_s = (stamps[-1] - stamps[3]) / (len(stamps) - 4)
            rows.append({"variant": name, "batches": len(stamps), "ms_per_batch": per_batch_s * 1e3,
                         "img_per_s": cfg.batch / per_batch_s})
            print(f"feed {name}: {rows[-1]['ms_per_batch']:.1f} ms/batch, {rows[-1]['img_per_s']:.0f} img/s",
                  flush=True)
    finally:
        data.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--cache", default="none", choices=["none", "ram", "disk"])
    parser.add_argument("--deterministic", default="true", choices=["true", "false"])
    parser.add_argument("--worker-nice", type=int, default=None, help="niceness added to the worker processes")
    parser.add_argument("--copy-threads", type=int, default=None, help="the loop's COPY_THREADS")
    parser.add_argument("--depth", type=int, default=None, help="the loop's PREFETCH_DEPTH")
    parser.add_argument("--data-dir", default=None, help="write the images here once and reuse them")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--feed-only", default=None, help="comma-separated copy variants (none, shard, per_device)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "loop"))
    args = parser.parse_args(argv)
    if args.small:
        args.imgsz, args.batch, args.images, args.epochs, args.workers = 128, 4, 40, 2, 1
    if args.worker_nice is not None:
        import yolojax.data.pipeline as pipeline
        pipeline.WORKER_NICENESS = args.worker_nice
    loop.COPY_THREADS = args.copy_threads or loop.COPY_THREADS
    loop.PREFETCH_DEPTH = args.depth or loop.PREFETCH_DEPTH
    clock = StepClock()
    loop.build_train_step = clock.build(loop.build_train_step)
    pauses = gc_pauses()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        data_yaml = data_dir / "data.yaml"
        if not data_yaml.exists() or len(list((data_dir / "images" / "train").glob("*.jpg"))) != args.images:
            data_yaml = write_images(data_dir, args.images, args.imgsz)
        overrides = {**AUG, "data": str(data_yaml), "cfg": "none", "model": f"yolov8{args.scale}",
                     "epochs": args.epochs, "close_mosaic": 0, "batch": args.batch, "imgsz": args.imgsz,
                     "workers": args.workers, "cache": {"none": False}.get(args.cache, args.cache),
                     "deterministic": args.deterministic == "true", "save": False, "plots": False, "val": False,
                     "project": str(Path(tmp) / "runs"), "warmup_epochs": 0.0}
        cfg = load_config([f"{k}={v}" for k, v in overrides.items()])
        if args.feed_only:
            rows = feed_only(cfg, args.feed_only.split(","), per_epoch := args.images // args.batch)
            row = {"feed_only": rows, "batch": args.batch, "batches_per_epoch": per_epoch, "workers": args.workers,
                   "cache": args.cache, "copy_threads": loop.COPY_THREADS, "prefetch_depth": loop.PREFETCH_DEPTH,
                   "devices": jax.device_count(), "device": jax.local_devices()[0].device_kind}
            Path(args.out).with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).with_suffix(".json").write_text(json.dumps(row, indent=2))
            return 0
        start = time.perf_counter()
        loop.train(cfg, evaluate=lambda *a, **k: {}, progress=False)
        train_s = time.perf_counter() - start
    per_epoch = args.images // args.batch
    time.sleep(3)  # the worker processes are gone and their shared memory released
    resident = clock.resident_ms(50)
    epochs = epoch_summary(clock.calls, per_epoch)
    steady = [r["steady_ms_per_step"] for r in epochs]
    gaps = [r["gap_ms"] for r in epochs if "gap_ms" in r]
    after_first = clock.calls[per_epoch:]  # from epoch 2's first call: the compile and the first epoch excluded
    overall = (after_first[-1] - after_first[0]) / (len(after_first) - 1) * 1e3 if len(after_first) > 1 else None
    row = {"scale": args.scale, "batch": args.batch, "imgsz": args.imgsz, "images": args.images,
           "steps_per_epoch": per_epoch, "epochs": args.epochs, "workers": args.workers, "cache": args.cache,
           "cpu_count": os.cpu_count(), "worker_nice": args.worker_nice,
           "deterministic": args.deterministic == "true", "train_s": train_s,
           "copy_threads": loop.COPY_THREADS, "prefetch_depth": loop.PREFETCH_DEPTH,
           "gc_gen2_collections": pauses["count"], "gc_gen2_pause_ms_total": pauses["seconds"] * 1e3,
           "resident_ms_per_step": resident, "epochs_detail": epochs,
           "steady_ms_per_step_median": float(np.median(steady)),
           "busy_share_steady_median": resident / float(np.median(steady)),
           "epoch_gap_ms_median": float(np.median(gaps)) if gaps else None,
           "ms_per_step_after_epoch1_with_gaps": overall,
           "busy_share_after_epoch1_with_gaps": resident / overall if overall else None,
           "device": jax.local_devices()[0].device_kind}
    print(json.dumps(row))
    print(summary_line(row, Path(args.out).name))
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end training throughput: the real grain pipeline (mosaic + perspective + HSV + flip at 640, worker
processes) feeding the jitted train step, against the same step on device-resident data.

GPU busy share = (ms/step on one device-resident batch) / (pipeline-fed ms/step), the same compiled step: 1.0 means
the input pipeline hides fully.

    python benchmarks/scripts/bench_e2e.py --small              # CPU smoke: 128 px, batch 4
    python benchmarks/scripts/bench_e2e.py --workers 14         # the GPU host (16 cores)
Writes benchmarks/e2e.json and benchmarks/e2e.md.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_data import AUG, write_images  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from yolojax.bench.train_step import sgd_plan  # noqa: E402
from yolojax.data import build_dataset  # noqa: E402
from yolojax.detectors import YOLOv8Task  # noqa: E402
from yolojax.train.feed import Prefetch  # noqa: E402
from yolojax.train.optim import hyper_at  # noqa: E402
from yolojax.train.setup import build_training  # noqa: E402
from yolojax.train.step import (  # noqa: E402
    TRAIN_KEYS,
    replicate,
    shard_batch,
)
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402


def pipeline_rate(ds, epoch: int, batches: int, skip: int = 1) -> float:
    """Images per second the pipeline alone delivers, over `batches` batches after the first `skip` (worker
    start-up and the first round of batches, which the workers build all at once, excluded)."""
    it = iter(ds.iterator(epoch))
    for _ in range(skip):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * ds.batch_size / (time.perf_counter() - start)
    if hasattr(it, "close"):
        it.close()
    return rate


def _copied(batch: dict) -> dict:
    """A copy of a host batch in freshly allocated memory (as a new batch from the workers would be)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in batch.items()}


def _pinned_then_device(batch: dict, mesh) -> dict:
    """Host batch -> pinned host memory -> device (two explicit copies instead of PJRT's own staging)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    pinned = NamedSharding(mesh, P("data"), memory_kind="pinned_host")
    on_host = jax.device_put({k: np.asarray(batch[k]) for k in TRAIN_KEYS if k in batch}, pinned)
    return jax.device_put(on_host, NamedSharding(mesh, P("data")))


def _populate(batch: dict, min_bytes: int = 1 << 20) -> dict:
    """Map in the pages of a batch's large arrays with one madvise(MADV_POPULATE_READ) each (Linux >= 5.14; ctypes
    calls run without the GIL) instead of one page fault per 4 KiB page inside the device copy."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    for value in batch.values():
        if isinstance(value, np.ndarray) and value.nbytes >= min_bytes:
            start = value.ctypes.data - value.ctypes.data % mmap.PAGESIZE
            length = value.ctypes.data + value.nbytes - start
            if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), 22) != 0:  # 22: MADV_POPULATE_READ
                raise OSError(ctypes.get_errno(), "madvise(MADV_POPULATE_READ) failed")
    return batch


class HostStaging:
    """Copies a host batch's large arrays into reused host buffers, then to the device.

    A batch from grain's worker processes lives in freshly mapped shared memory: the first touch of each of its pages
    faults, and a host-to-device copy straight from it takes those faults inside the device copy (5 to 87 ms for the
    same 79 MB batch in `benchmarks/2026-11-25_device_warp/README.md`). `np.copyto` takes them without holding the
    GIL, and the buffers it fills stay mapped from batch to batch, so the device copy reads resident pages. A buffer
    is reused only after the device copy that reads it is complete. Thread-safe: `Prefetch` calls it from several
    threads.

    `enabled=False` passes batches straight to `to_device`: on the CPU backend a device array may alias the host
    array it came from, so a reused buffer would change arrays already handed out.
    """

    def __init__(self, to_device: Callable[[dict], dict], *, enabled: bool = True, min_bytes: int = 1 << 20):
        self.to_device = to_device
        self.enabled = enabled
        self.min_bytes = min_bytes
        self._free: dict = {}
        self._lock = threading.Lock()

    def _take(self, like: np.ndarray) -> np.ndarray:
        with self._lock:
            pool = self._free.setdefault((like.shape, like.dtype.str), [])
            return pool.pop() if pool else np.empty_like(like)

    def _give_back(self, buffers: list[np.ndarray]) -> None:
        with self._lock:
            for buffer in buffers:
                self._free[(buffer.shape, buffer.dtype.str)].append(buffer)

    def __call__(self, batch: dict) -> dict:
        if not self.enabled:
            return self.to_device(batch)
        staged, taken = {}, []
        for key, value in batch.items():
            if isinstance(value, np.ndarray) and value.nbytes >= self.min_bytes:
                buffer = self._take(value)
                np.copyto(buffer, value)
                staged[key] = buffer
                taken.append(buffer)
            else:
                staged[key] = value
        out = self.to_device(staged)
        jax.block_until_ready(out)  # the device copies have read the buffers
        self._give_back(taken)
        return out



def step_times(ds, scale: str, imgsz: int, batches: int, dtype, feeds: bool = False, settle_s: float = 0.0,
               variants: tuple[str, ...] = (), rounds: int = 1) -> dict:
    """ms per train step (one compiled program): fed by the pipeline through the train loop's `Prefetch` (batches
    copied to the device in background threads), and on one device-resident batch of the same pipeline (the
    GPU-bound rate), measured both before the worker processes start and while they run.

    With `feeds`, also the feed path without workers: host batches already in memory copied by `Prefetch` (the
    same pages each time, fresh copies, or through pinned host memory), which separates the copy from the workers'
    CPU load.
    """
    task = YOLOv8Task(scale=scale, num_classes=ds.num_classes, dtype=dtype)
    plan = sgd_plan(ds.batch_size)
    run = build_training(task, plan, (imgsz, imgsz))
    mesh, state, step = run.mesh, run.state, run.step
    hyper = replicate(hyper_at(plan, 10_000, 10), mesh)
    host_first = next(iter(ds.iterator(1, workers=0)))
    first = shard_batch(host_first, mesh)
    start = time.perf_counter()
    state, metrics = step(state, first, hyper)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start

    def run(next_batch, timing=None) -> float:
        nonlocal state, metrics
        begin = time.perf_counter()
        for _ in range(batches):
            batch = next_batch()
            dispatched = time.perf_counter()
            state, metrics = step(state, batch, hyper)
            if timing is not None:
                timing["dispatch"] += time.perf_counter() - dispatched
        jax.block_until_ready(metrics)
        return (time.perf_counter() - begin) / batches * 1e3

    def fed(items, prepare, tag=None, threads=2) -> tuple[float, float]:
        """(ms/step, main-process CPU seconds per step) with `Prefetch` as the train loop uses it. With `tag`, also
        records where the main process's time goes, ms per step: drawing batches from `items` (the producer
        thread), `prepare` (summed over the copy threads), the step's wait for the next batch, its dispatch."""
        timing = collections.Counter()
        lock = threading.Lock()

        def timed(kind, fn, *args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                with lock:
                    timing[kind] += time.perf_counter() - start

        drawn = iter(lambda: timed("draw", next, items, None), None)
        cpu = time.process_time()
        with Prefetch(drawn, depth=3, prepare=lambda b: timed("prepare", prepare, b), threads=threads) as queue:
            ms = run(lambda: timed("wait", next, queue), timing)
        if tag:
            for kind in ("draw", "prepare", "wait", "dispatch"):
                note(f"{tag}_{kind}_ms_per_step", timing[kind] / batches * 1e3)
        return ms, (time.process_time() - cpu) / batches

    def note(key, value):
        out[key] = value
        print(f"{key}: {value}", flush=True)

    run(lambda: first)  # warm-up
    out = {"compile_s": compile_s}
    note("resident_idle_ms_per_step", run(lambda: first))
    to_device = lambda b: shard_batch(b, mesh)  # noqa: E731
    if feeds:
        note("memory_same_ms_per_step", fed(itertools.repeat(host_first), to_device)[0])
        note("memory_fresh_ms_per_step",
             fed(itertools.repeat(host_first), lambda b: to_device(_copied(b)), tag="memory_fresh")[0])
        try:
            note("memory_pinned_ms_per_step",
                 fed(itertools.repeat(host_first), lambda b: _pinned_then_device(_copied(b), mesh))[0])
        except Exception as err:  # memory kinds are backend-dependent
            out["memory_pinned_error"] = f"{type(err).__name__}: {err}"[:300]
    it = iter(ds.iterator(1))
    next(it)  # the workers are up
    time.sleep(settle_s)  # let them fill their buffers (the train loop overlaps this with compilation)
    note("resident_ms_per_step", run(lambda: first))  # while the workers fill their buffers
    out["fed_ms_per_step"], out["fed_main_cpu_s_per_step"] = fed(it, to_device, tag="fed")
    if hasattr(it, "close"):
        it.close()
    if variants:  # ways to copy a batch to the device, each fed by a fresh epoch of the same pipeline, round-robin
        sharding = NamedSharding(mesh, P("data"))

        def plain(batch):  # one jax.device_put of the dict instead of make_array_from_process_local_data
            keys = [k for k in batch if k in TRAIN_KEYS or k.startswith("warp_")]
            return jax.device_put({k: np.asarray(batch[k]) for k in keys}, sharding)

        staging = HostStaging(to_device, enabled=jax.default_backend() != "cpu")
        ways = {"direct1": (to_device, 1), "direct2": (to_device, 2), "direct4": (to_device, 4),
                "staged1": (staging, 1), "staged2": (staging, 2), "plain2": (plain, 2),
                "populate2": (lambda b: to_device(_populate(b)), 2),
                "ready2": (lambda b: jax.block_until_ready(to_device(b)), 2)}
        unknown = set(variants) - set(ways)
        if unknown:
            raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {sorted(ways)}")
        epoch = 2
        for round_ in range(rounds):
            for name in variants:
                prepare, threads = ways[name]
                it = iter(ds.iterator(epoch))
                epoch += 1
                next(it)
                time.sleep(settle_s)
                try:
                    note(f"{name}_r{round_}_ms_per_step", fed(it, prepare, tag=f"{name}_r{round_}", threads=threads)[0])
                except OSError as err:
                    out[f"{name}_error"] = str(err)
                if hasattr(it, "close"):
                    it.close()
        for name in variants:
            runs = [out[f"{name}_r{r}_ms_per_step"] for r in range(rounds) if f"{name}_r{r}_ms_per_step" in out]
            if runs:
                note(f"{name}_median_ms_per_step", float(np.median(runs)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--cache", default="none", choices=["none", "ram"])
    parser.add_argument("--hsv-on-device", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--warp-on-device", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels (yolojax.xla_flags)")
    parser.add_argument("--feeds", action="store_true", help="also time the copy path fed from memory (no workers)")
    parser.add_argument("--variants", default="",
                        help="comma list of copy ways to compare, each on fresh epochs: direct1/2/4 (shard_batch from "
                             "the workers' shared memory on 1/2/4 threads), staged1/2 (HostStaging, the train loop's "
                             "way), plain2 (one device_put), populate2 (madvise the pages in first), ready2 (direct, "
                             "then wait for the copy on the copy thread)")
    parser.add_argument("--rounds", type=int, default=1, help="times each of --variants runs, round-robin")
    parser.add_argument("--worker-nice", type=int, default=None, help="niceness added to the worker processes")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds between starting the workers and timing")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "e2e"))
    args = parser.parse_args(argv)
    apply_default_xla_flags(job="train", deterministic=args.deterministic)
    if args.small:
        args.imgsz, args.batch, args.images, args.batches, args.workers = 128, 4, 32, 3, 1
    dtype = jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    choice = {"auto": "auto", "true": True, "false": False}
    hsv, warp = choice[args.hsv_on_device], choice[args.warp_on_device]

    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_images(Path(tmp), args.images, args.imgsz)
        cfg = dict(AUG, data=str(data_yaml), imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                   cache="ram" if args.cache == "ram" else False, max_boxes=100, albumentations=False, epochs=100,
                   hsv_on_device=hsv, warp_on_device=warp)
        ds = build_dataset(cfg, "train", seed=0)
        if args.worker_nice is not None:
            ds.worker_niceness = args.worker_nice
        if args.batches > ds.num_batches - 2:
            raise SystemExit(f"--batches {args.batches}: an epoch of {args.images} images has only {ds.num_batches} "
                             "batches (one is drawn before timing); use more --images or fewer --batches")
        skip = max(1, args.workers)
        rate = pipeline_rate(ds, 0, max(1, min(args.batches, ds.num_batches - skip - 1)), skip=skip)
        variants = tuple(v for v in args.variants.split(",") if v)
        times = step_times(ds, args.scale, args.imgsz, args.batches, dtype, args.feeds, args.settle, variants,
                           args.rounds)
    fed, resident = times["fed_ms_per_step"], times["resident_ms_per_step"]
    row = {"scale": args.scale, "batch": args.batch, "imgsz": args.imgsz, "workers": args.workers,
           "cpu_count": os.cpu_count(), "cache": args.cache, "worker_niceness": ds.worker_niceness,
           "hsv_on_device": ds.hsv_on_device, "warp_on_device": ds.warp_on_device,
           "pipeline_img_per_s": rate, **times, "fed_img_per_s": args.batch / fed * 1e3,
           "gpu_busy_share": resident / fed,
           "gpu_busy_share_vs_idle": times["resident_idle_ms_per_step"] / fed,
           "device": jax.local_devices()[0].device_kind,
           "xla_flags": os.environ.get("XLA_FLAGS", "")}
    print(json.dumps(row))
    md = ("| scale | batch | imgsz | workers | cache | HSV on device | warp on device | pipeline img/s | fed ms/step "
          "| resident ms/step | busy share | device |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {row['scale']} | {row['batch']} | {row['imgsz']} | {row['workers']} | {args.cache} | "
          f"{row['hsv_on_device']} | {row['warp_on_device']} | {rate:.0f} | {fed:.1f} | {resident:.1f} | "
          f"{row['gpu_busy_share']:.2f} | {row['device']} |\n")
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(row, indent=2))
    out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

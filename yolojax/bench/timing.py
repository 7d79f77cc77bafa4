"""Wall-clock timing of device work for the benchmark scripts (host-side I/O helper, not used inside jit), and the
module-constant patches their A/B variants use."""
from __future__ import annotations

import importlib
import json
import os
import statistics
import time
from typing import Any, Callable, MutableMapping


def median_ms(fn: Callable[[], Any], sync: Callable[[Any], Any], iters: int, warmup: int) -> float:
    """Median wall time of `fn()` in milliseconds over `iters` calls after `warmup` calls; each call is followed by
    `sync(result)` (e.g. `jax.block_until_ready`, or a `torch.cuda.synchronize` wrapper) so that asynchronous
    device work is inside the measurement."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def queued_ms(fn: Callable[[], Any], sync: Callable[[Any], Any], steps: int, *, rounds: int = 3,
              warmup: int = 1) -> float:
    """ms per call with `steps` calls of `fn()` queued back to back and one `sync` at the end (as a train loop keeps
    a step in flight), the fastest of `rounds` rounds, after `warmup` synced calls."""
    for _ in range(warmup):
        sync(fn())
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            result = fn()
        sync(result)
        best = min(best, (time.perf_counter() - start) / steps * 1e3)
    return best


def dispatch_ms(fn: Callable[[], Any], sync: Callable[[Any], Any], iters: int = 7) -> float:
    """Median host time in milliseconds for `fn()` to return while the device is idle (synced before each call):
    what launching one call costs the host. A step whose dispatch takes longer than its device time is host-bound,
    whatever the queue depth."""
    times = []
    for _ in range(iters):
        sync(fn())
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
        sync(result)
    return statistics.median(times)


def share_process_with_reference(environ: MutableMapping[str, str] = os.environ) -> None:
    """Environment for a benchmark that runs the PyTorch reference in the same process: JAX allocates GPU memory on
    demand (torch shares the card) and ultralytics stays quiet and offline. Call before the first JAX computation
    and before importing ultralytics; values already set are kept."""
    environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    environ.setdefault("YOLO_VERBOSE", "False")
    environ.setdefault("YOLO_OFFLINE", "True")


def patch_constants(items: list[str]) -> None:
    """Set module constants for an A/B variant before anything is built: each item "package.module.NAME=json value",
    e.g. "yolojax.models.layers.BLOCKS_MIN_INFERENCE_BATCH=1"."""
    for item in items:
        target, value = item.split("=", 1)
        module, name = target.rsplit(".", 1)
        setattr(importlib.import_module(module), name, json.loads(value))

"""Wall-clock timing of device work for the benchmark scripts (host-side I/O helper, not used inside jit)."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


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

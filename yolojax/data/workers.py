"""grain's worker processes for the pipeline: their setup, and their clean end at exit (Ctrl-C included)."""
from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import weakref

import cv2
import grain
from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

# Iterators with worker processes, closed at exit (Ctrl-C included) by `close_worker_iterators`.
_WORKER_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def close_worker_iterators() -> None:
    """Stop the worker processes of every iterator still open, then collect garbage: grain hands batches over in
    shared memory that a batch's arrays unlink when they are freed, and arrays left in reference cycles (a closed
    iterator's buffers) are freed only by a collection; left to interpreter shutdown, their finalizers fail and
    Python's resource tracker reports them as leaked shared_memory objects. The frames of an uncaught exception
    (kept for post-mortem debugging, of no use now) would keep their batches alive: they are let go first."""
    for name in ("last_traceback", "last_value", "last_exc"):
        if getattr(sys, name, None) is not None:
            setattr(sys, name, None)
    for iterator in list(_WORKER_ITERATORS):
        iterator.close()
    _WORKER_ITERATORS.clear()
    deleting = SharedMemoryArray._del_thread_pool  # grain's thread that unlinks freed batches: let it finish its
    if deleting is not None:                       # queue and stop now (left to shutdown, its queue is lost)
        deleting.close()
        deleting.join()
    SharedMemoryArray._disable_async_del()  # then unlink in the collection itself
    gc.collect()


def _init_worker(worker_index: int, worker_count: int, niceness: int = 0) -> None:
    """In each grain worker process: one OpenCV thread (the workers are the parallelism; oversubscribing the cores
    with OpenCV's own pool per worker only adds contention), and `niceness` added to the process's nice value."""

    cv2.setNumThreads(1)
    if niceness:
        os.nice(niceness)


def _mark_absl_flags_parsed():
    """grain's worker processes read absl flags; outside an absl app they were never parsed (defaults are used)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def worker_iterator(ds, workers: int, niceness: int = 0):
    """Iterator over grain IterDataset `ds` built by `workers` processes (each with `_init_worker`), closed at exit
    by `close_worker_iterators` if still open."""
    _mark_absl_flags_parsed()
    init = functools.partial(_init_worker, niceness=niceness)
    iterator = iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=init))
    _WORKER_ITERATORS.add(iterator)
    return iterator

"""What the train loop needs from the data pipeline (`TrainData`), its implementation over `yolojax.data`
(`PipelineData`), and the background feed of batches to the devices (`Prefetch`).
"""
from __future__ import annotations

import queue
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import cv2
import jax
import numpy as np

from yolojax.data import build_dataset
from yolojax.train import distributed as dist


def process_rows(batch_size: int, index: int, count: int) -> tuple[int, int]:
    """Process `index` of `count`'s rows (start, stop) of a global batch of `batch_size` images: an equal share."""
    if batch_size % count:
        raise ValueError(f"batch={batch_size} does not split over {count} processes; choose batch as a multiple of "
                         f"the process count (and of the device count, {count} x devices per process)")
    share = batch_size // count
    return index * share, (index + 1) * share


class TrainData(Protocol):
    """The train loop's data (`PipelineData`; the tests' `ToyData` is a stand-in).

    num_classes, names: the classes; train_size: train images; batches_per_epoch: global batches per epoch.
    size_buckets: image sizes for multi-scale ((imgsz,) otherwise).
    on_device: the augmentations the train step renders ("" if none), for the run's banner.
    train_epoch(epoch, *, mosaic, start_batch=0, data_state=None) -> iterator of batches (numpy dicts): this
        process's rows of each global batch (all of them in a run of one process).
    data_state() -> JSON-able / bytes state of the current train iterator (for a mid-epoch checkpoint); the loop
        calls it right after each batch is drawn (in its `Prefetch` thread) and saves the one of the last batch a
        step consumed.
    val_batches() -> the val batches the evaluator iterates.
    close(): frees what the data holds (worker processes); the loop calls it when training ends.
    """

    num_classes: int
    names: tuple[str, ...]
    train_size: int
    batches_per_epoch: int
    size_buckets: tuple[int, ...]

    @property
    def on_device(self) -> str: ...

    def train_epoch(self, epoch: int, *, mosaic: bool, start_batch: int = 0,
                    data_state: Any = None) -> Iterator[dict]: ...

    def data_state(self) -> Any: ...

    def val_batches(self) -> Iterable[dict]: ...

    def close(self) -> None: ...


def preload_per_host(store, indices, imgsz: int, split: str) -> None:
    """cache=ram in a run of several processes: the first process of each host decodes the images into one file
    that the host's other processes map, instead of each decoding its own copy. Every process calls this in the
    same order (it meets the others at a barrier)."""
    token = dist.from_main(uuid.uuid4().hex)
    path = Path(tempfile.gettempdir()) / f"yolojax_ram_cache_{token}_{split}_{imgsz}.u8"
    writer = dist.host_leader() == jax.process_index()
    if writer:
        store.preload(indices, imgsz, path=path)
    dist.barrier()
    if not writer:
        store.attach(path)


class PipelineData:
    """TrainData over `yolojax.data.build_dataset` (grain, deterministic per (seed, epoch, index)).

    One train iterator serves consecutive epochs, so the worker processes start once per run, not once per epoch
    (starting them costs seconds, comparable to a short epoch's steps). A batch is a function of its epoch and
    position alone, so resuming at (epoch, batch) needs no iterator state.

    In a run of several processes each builds only its rows of every train batch (`process_rows`; `process`
    (index, count) overrides jax.process_index / process_count); `batch` stays the global batch size.
    """

    def __init__(self, cfg: Any, process: tuple[int, int] | None = None):
        self.cfg = cfg
        preload = preload_per_host if dist.is_multi_process() else None
        self.train = build_dataset(cfg, "train", seed=cfg.seed, preload=preload)
        self.summary = self.train.summary  # the label scan's counts, printed before training
        index, count = process if process is not None else (jax.process_index(), jax.process_count())
        self.rows = process_rows(self.train.batch_size, index, count)
        self.val = build_dataset(cfg, "val", seed=cfg.seed, preload=preload)  # validated at the end even if val=False
        self.num_classes = self.train.num_classes
        self.names = tuple(self.train.names)
        self.train_size = self.train.num_images
        self.batches_per_epoch = self.train.num_batches
        self.size_buckets = tuple(self.train.size_buckets)
        self._iterator: Iterator | None = None
        self._next = 0  # global index (epoch * batches_per_epoch + batch) of the iterator's next batch
        self._end = 0  # global index where the iterator ends (0: no iterator)

    @property
    def on_device(self) -> str:
        """The augmentations whose pixels the train step renders ("" when all run on the host)."""
        parts = (("Mosaic/RandomPerspective/flips/MixUp", self.train.warp_on_device), ("HSV", self.train.hsv_on_device))
        return " + ".join(name for name, on in parts if on)

    def train_epoch(self, epoch: int, *, mosaic: bool, start_batch: int = 0, data_state: Any = None) -> Iterator:
        nb = self.batches_per_epoch
        position = epoch * nb + start_batch
        if mosaic != self.train.mosaic_enabled(epoch):  # not the run's plan: an iterator for this epoch alone
            self._open(epoch, start_batch, 1, mosaic=mosaic)
        elif self._iterator is None or self._next != position or position >= self._end:
            self._open(epoch, start_batch, max(1, int(self.train.cfg["epochs"]) - epoch))
        return self._take(nb - start_batch)

    def _open(self, epoch: int, start_batch: int, epochs: int, mosaic: bool | None = None) -> None:
        self.close()
        self._iterator = self.train.iterator(epoch, mosaic=mosaic, start_batch=start_batch, epochs=epochs,
                                             rows=self.rows)
        self._next = epoch * self.batches_per_epoch + start_batch
        self._end = (epoch + epochs) * self.batches_per_epoch

    def _take(self, count: int) -> Iterator:
        iterator = self._iterator
        assert iterator is not None, "_open first"
        for _ in range(count):
            batch = next(iterator)
            self._next += 1
            yield batch

    def data_state(self) -> Any:
        """The global index of the next batch (informative: resuming needs only the loop's epoch and batch)."""
        return self._next if self._iterator is not None else None

    def val_batches(self) -> Iterator:
        return self.val.iterator(0, workers=0)  # in-process: val is small and spawning workers costs more

    def close(self) -> None:
        """Stops the train iterator's worker processes."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator, self._next, self._end = None, 0, 0


def build_train_data(cfg: Any) -> PipelineData:
    return PipelineData(cfg)


def resize_batch(batch: dict, size: int) -> dict:
    """Batch images (b, s, s, 3) uint8 -> (b, size, size, 3), bilinear (boxes are normalized: unchanged).

    The reference's multi-scale resizes the whole batch the same way (bilinear interpolation).
    """
    images = batch["images"]
    if images.shape[1] == size and images.shape[2] == size:
        return batch
    resized = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images])
    return {**batch, "images": resized}


class _Ready:
    """A computed value behind the `Future.result()` interface."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Prefetch:
    """Iterate `prepare(item)` for each of `items`, `depth` ahead, in background threads, so that producing the next
    batch (the pipeline's IPC, the multi-scale resize, the host-to-device copy) overlaps the step the device runs.

    `items` is drawn in order by one thread; `prepare` runs on `threads` threads (a batch's host-to-device copy is
    mostly page faults on freshly mapped shared memory, which parallelise). Results come out in order; an exception
    raised while producing one is re-raised by `next`. `close()` (also on leaving a `with` block) stops early.
    """

    _END = object()

    def __init__(self, items: Iterable, depth: int = 2, *, prepare: Callable[[Any], Any] | None = None,
                 threads: int = 1):
        self._prepare = prepare if prepare is not None else (lambda item: item)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="prefetch") if threads > 1 else None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(items),), daemon=True)
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator) -> None:
        try:
            for item in items:
                pending: Any = (self._pool.submit(self._prepare, item) if self._pool is not None
                                else _Ready(self._prepare(item)))
                if not self._put((pending, None)):
                    return
            self._put((self._END, None))
        except BaseException as err:  # handed to the consumer
            self._put((self._END, err))

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self):
        pending, err = self._queue.get()
        if pending is self._END:
            self._queue.put((pending, err))  # stay exhausted
            if err is not None:
                raise err
            raise StopIteration
        return pending.result()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
